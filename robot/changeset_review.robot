*** Settings ***
Documentation     Reviewing a plan from later processes: `plan status`, `diff`, `artifacts` and
...               `invocations` in every format (plain, rich, json, yaml; patch for diff)
...               against a plan built once, in earlier processes, by the suite setup; the
...               help text of each command; and the exit codes of an unknown plan (3), a
...               malformed id (2), a missing ledger (3) and missing artifacts (3: a
...               cancelled plan's changeset, a blob gone from a damaged ledger).
...               The plan: write hello.txt, edit src/app.py, delete old.txt, move a.txt to
...               moved/a.txt, edit notes.txt (no final newline), `plan exec` creating the
...               binary img/logo.bin, then a failing edit: 7 calls, 1 error, 6 files.
Resource          resources/common.resource
Suite Setup       Make Reviewed Plan
Suite Teardown    Remove Directory    ${SUITE_ROOT}    recursive=True

*** Variables ***
${UNKNOWN_ID}     01ARZ3NDEKTSV4RRFFQ69G5FAV
${APP}            import sys\n\nprint('hello')\nprint('bye')\n

*** Keywords ***
Make Reviewed Plan
    [Documentation]    ${WS} (suite) holds the workspace and ledger; ${PLAN} the plan.
    ${tmp}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-review-")    modules=tempfile
    Set Suite Variable    ${SUITE_ROOT}    ${tmp}
    Set Suite Variable    ${WS}    ${tmp}/ws
    Create File    ${WS}/src/app.py    ${APP}
    Create File    ${WS}/old.txt    old\n
    Create File    ${WS}/a.txt    alpha\n
    Create File    ${WS}/notes.txt    no newline
    Create File    ${WS}/README.md    readme\n
    Changeledger    init
    ${steps}=    Catenate    SEPARATOR=,${SPACE}
    ...    {"tool": "write_file", "args": {"path": "hello.txt", "content": "hi\\n"}}
    ...    {"tool": "edit_file", "args": {"path": "src/app.py", "old": "print('hello')", "new": "print('hi')"}}
    ...    {"tool": "delete_file", "args": {"path": "old.txt"}}
    ...    {"tool": "move_file", "args": {"src": "a.txt", "dst": "moved/a.txt"}}
    ...    {"tool": "edit_file", "args": {"path": "notes.txt", "old": "no newline", "new": "still no newline"}}
    Create File    ${tmp}/plan.json    {"title": "Review me", "steps": [${steps}]}
    ${env}=    Changeledger Json    plan    run    ${tmp}/plan.json
    Set Suite Variable    ${PLAN}    ${env}[data][plan_id]
    Set Suite Variable    ${CHANGESET}    ${env}[data][changeset_id]
    Changeledger    plan    exec    ${PLAN}    --    sh    -c
    ...    mkdir -p img && printf '\\211PNG\\r\\n\\032\\n\\000\\000\\001binary' > img/logo.bin
    Create File    ${tmp}/fail.json
    ...    {"steps": [{"tool": "edit_file", "args": {"path": "src/app.py", "old": "absent text", "new": "x"}}]}
    Changeledger Json    plan    run    ${tmp}/fail.json    --plan    ${PLAN}    rc=1

Use A Copy Of The Ledger
    [Documentation]    This test's ${WS}: a copy of the suite's workspace and ledger, to change.
    ${tmp}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-review-copy-")    modules=tempfile
    Copy Directory    ${SUITE_ROOT}/ws    ${tmp}/ws
    Set Test Variable    ${COPY_ROOT}    ${tmp}
    Set Test Variable    ${WS}    ${tmp}/ws

Remove The Copy
    Remove Directory    ${COPY_ROOT}    recursive=True

Output Should Contain All
    [Arguments]    ${text}    @{fragments}
    FOR    ${fragment}    IN    @{fragments}
        Should Contain    ${text}    ${fragment}
    END

Rich Output
    [Documentation]    `--format rich` output, with the ANSI styles removed.
    [Arguments]    @{args}
    ${result}=    Changeledger    @{args}    --format    rich
    Should Contain    ${result.stdout}    \x1b[    msg=rich output has no styles
    ${text}=    Without Ansi    ${result.stdout}
    RETURN    ${text}

Json And Yaml Should Agree
    [Documentation]    The json envelope of `@{args}` is valid against ${schema}, and the yaml
    ...    one holds the same data. Returns the json envelope.
    [Arguments]    ${schema}    @{args}
    ${env}=    Changeledger Json    @{args}
    Envelope Should Match Schema    ${env}    ${schema}
    ${doc}=    Changeledger Yaml    @{args}
    Envelope Should Match Schema    ${doc}    ${schema}
    Envelopes Should Match Apart From Timing    ${doc}    ${env}
    RETURN    ${env}

Should Fail With
    [Documentation]    `@{args}` exits ${rc} with one `error:` line holding ${fragments}, nothing
    ...    on stdout in plain format, and a valid error envelope in json and yaml.
    [Arguments]    ${rc}    ${args}    @{fragments}
    ${result}=    Changeledger    @{args}    rc=${rc}
    Error Should Be One Line    ${result}    @{fragments}
    Should Be Empty    ${result.stdout}
    ${env}=    Changeledger Json    @{args}    rc=${rc}
    Envelope Should Match Schema    ${env}    error.json
    ${doc}=    Changeledger Yaml    @{args}    rc=${rc}
    Envelope Should Match Schema    ${doc}    error.json
    Envelopes Should Match Apart From Timing    ${doc}    ${env}
    RETURN    ${env}

Blob Of
    [Documentation]    The after_hash of ${path} in the plan's diff.
    [Arguments]    ${path}
    ${env}=    Changeledger Json    plan    diff    ${PLAN}    --path    ${path}
    Length Should Be    ${env}[data][files]    1
    RETURN    ${env}[data][files][0][after_hash]

Delete Blob
    [Documentation]    Damage the ledger: remove one blob row with foreign keys off.
    [Arguments]    ${digest}
    ${deleted}=    Evaluate
    ...    (lambda db, digest: (db.execute('PRAGMA foreign_keys=OFF'), db.execute('DELETE FROM blobs WHERE hash = ?', (digest,)).rowcount, db.commit(), db.close())[1])(sqlite3.connect($WS + '/.changeledger/ledger.db'), $digest)
    ...    modules=sqlite3
    Should Be Equal As Integers    ${deleted}    1

*** Test Cases ***
Status In Every Format
    ${result}=    Changeledger    plan    status    ${PLAN}
    Output Should Contain All    ${result.stdout}
    ...    plan_id: ${PLAN}\n    title: Review me\n    state: failed\n
    ...    changeset_id: ${CHANGESET}\n    execution.tool_calls: 7\n    execution.tool_errors: 1\n
    ...    execution.files_changed: 6\n    execution.insertions: 3\n    execution.deletions: 3\n
    ...    error.details.tool_name: edit_file\n    apply: -\n    artifacts: present
    ${text}=    Rich Output    plan    status    ${PLAN}
    Output Should Contain All    ${text}    plan ${PLAN}    failed    Review me    ${CHANGESET}
    ...    tool calls    edit_file    present
    ${env}=    Json And Yaml Should Agree    plan-status.json    plan    status    ${PLAN}
    Should Be Equal    ${env}[data][state]    failed
    Should Be Equal    ${env}[data][changeset_id]    ${CHANGESET}
    ${expected}=    Create Dictionary
    ...    tool_calls=${7}    tool_errors=${1}    files_changed=${6}    insertions=${3}    deletions=${3}
    Dictionaries Should Be Equal    ${env}[data][execution]    ${expected}
    Should Contain    ${env}[data][error][message]    edit_file
    Should Be Equal    ${env}[data][artifacts]    present

Diff In Plain Format Is A Git Diff Of The Stored Contents
    ${result}=    Changeledger    plan    diff    ${PLAN}
    Output Should Contain All    ${result.stdout}
    ...    diff --git a/src/app.py b/src/app.py\n
    ...    --- a/src/app.py\n+++ b/src/app.py\n@@ -1,4 +1,4 @@\n import sys\n \n-print('hello')\n+print('hi')\n print('bye')\n
    ...    diff --git a/a.txt b/moved/a.txt\nsimilarity index 100%\nrename from a.txt\nrename to moved/a.txt\n
    ...    new file mode 100644\n
    ...    deleted file mode 100644\n
    ...    Binary files /dev/null and b/img/logo.bin differ (absent -> 17 bytes, sha256
    ...    -no newline\n\\ No newline at end of file\n+still no newline\n\\ No newline at end of file\n
    ...    ${SPACE}6 files changed, 3 insertions(+), 3 deletions(-)
    ${entries}=    Changeledger    plan    diff    ${PLAN}    --entries
    Output Should Contain All    ${entries.stdout}
    ...    \# entry 1: create hello.txt (write_file)\n    \# entry 4: rename moved/a.txt (move_file)\n
    ...    \# entry 6: create img/logo.bin (exec)\n
    Should Not Contain    ${entries.stdout}    \# entry 7

Diff Stat And Path Filters
    ${stat}=    Changeledger    plan    diff    ${PLAN}    --stat
    Should Match Regexp    ${stat.stdout}    (?m)^ src/app\\.py +\\| +2 \\+-$
    Should Match Regexp    ${stat.stdout}    (?m)^ a\\.txt => moved/a\\.txt +\\| +0 *$
    Should Match Regexp    ${stat.stdout}    (?m)^ img/logo\\.bin +\\| Bin 0 -> 17 bytes$
    Should Not Contain    ${stat.stdout}    @@
    Should End With    ${stat.stdout}    6 files changed, 3 insertions(+), 3 deletions(-)
    ${only}=    Changeledger    plan    diff    ${PLAN}    --path    src/*
    Should Contain    ${only.stdout}    diff --git a/src/app.py b/src/app.py
    Should Not Contain    ${only.stdout}    hello.txt
    Should End With    ${only.stdout}    1 file changed, 1 insertion(+), 1 deletion(-)
    ${env}=    Json And Yaml Should Agree    plan-diff.json
    ...    plan    diff    ${PLAN}    --path    a.txt    --path    *.bin
    ${paths}=    Evaluate    [f['path'] for f in $env['data']['files']]
    ${expected}=    Create List    img/logo.bin    moved/a.txt
    Lists Should Be Equal    ${paths}    ${expected}

Diff In Rich Format
    ${text}=    Rich Output    plan    diff    ${PLAN}
    Output Should Contain All    ${text}    changeledger plan diff    plan ${PLAN}
    ...    6 files changed, 3 insertions(+), 3 deletions(-)    a.txt -> moved/a.txt
    ...    create (binary)    delete    -print('hello')    +print('hi')
    ${stat}=    Rich Output    plan    diff    ${PLAN}    --stat
    Should Contain    ${stat}    src/app.py
    Should Not Contain    ${stat}    +print('hi')

Diff In Json And Yaml
    ${env}=    Json And Yaml Should Agree    plan-diff.json    plan    diff    ${PLAN}
    Should Be Equal    ${env}[data][plan_id]    ${PLAN}
    ${expected}=    Create Dictionary    files_changed=${6}    insertions=${3}    deletions=${3}
    ...    creates=${2}    modifies=${2}    deletes=${1}    renames=${1}
    Dictionaries Should Be Equal    ${env}[data][summary]    ${expected}
    ${files}=    Evaluate    {f['path']: f for f in $env['data']['files']}
    Should Be Equal    ${files}[moved/a.txt][old_path]    a.txt
    Should Be True    ${files}[img/logo.bin][binary]
    Should Be Equal    ${files}[src/app.py][hunks][0][lines][2]    -print('hello')
    ${env}=    Json And Yaml Should Agree    plan-diff.json    plan    diff    ${PLAN}    --entries
    ${seqs}=    Evaluate    [f['seq'] for f in $env['data']['files']]
    ${expected}=    Evaluate    list(range(1, 7))
    Lists Should Be Equal    ${seqs}    ${expected}
    Json And Yaml Should Agree    plan-diff.json    plan    diff    ${PLAN}    --stat

Diff As A Patch That Git Applies
    [Setup]    Use A Copy Of The Ledger
    ${patch}=    Set Variable    ${COPY_ROOT}/plan.patch
    ${result}=    Run Process    ${CL}    plan    diff    ${PLAN}    --format    patch
    ...    cwd=${WS}    env:CHANGELEDGER_DB=    stdout=${patch}
    Should Be Equal As Integers    ${result.rc}    0    msg=${result.stderr}
    Output Should Contain All    ${result.stdout}
    ...    new file mode 100644\nindex 0000000000000000000000000000000000000000..
    ...    GIT binary patch\nliteral 17\n    rename from a.txt\nrename to moved/a.txt
    ...    deleted file mode 100644    \\ No newline at end of file
    Copy Directory    ${WS}    ${COPY_ROOT}/git
    Remove Directory    ${COPY_ROOT}/git/.changeledger    recursive=True
    ${init}=    Run Process    git    init    -q    cwd=${COPY_ROOT}/git
    Should Be Equal As Integers    ${init.rc}    0    msg=${init.stderr}
    ${applied}=    Run Process    git    apply    --binary    ${patch}    cwd=${COPY_ROOT}/git
    Should Be Equal As Integers    ${applied.rc}    0    msg=git apply refused: ${applied.stderr}
    ${hello}=    Get File    ${COPY_ROOT}/git/hello.txt
    Should Be Equal    ${hello}    hi\n
    ${app}=    Get File    ${COPY_ROOT}/git/src/app.py
    Should Be Equal    ${app}    import sys\n\nprint('hi')\nprint('bye')\n
    File Should Not Exist    ${COPY_ROOT}/git/old.txt
    File Should Not Exist    ${COPY_ROOT}/git/a.txt
    ${moved}=    Get File    ${COPY_ROOT}/git/moved/a.txt
    Should Be Equal    ${moved}    alpha\n
    ${notes}=    Get File    ${COPY_ROOT}/git/notes.txt
    Should Be Equal    ${notes}    still no newline
    ${logo}=    Evaluate    pathlib.Path($COPY_ROOT, 'git', 'img', 'logo.bin').read_bytes().hex()
    ...    modules=pathlib
    Should Be Equal    ${logo}    89504e470d0a1a0a00000162696e617279
    [Teardown]    Remove The Copy

Artifacts In Every Format
    ${result}=    Changeledger    plan    artifacts    ${PLAN}
    Output Should Contain All    ${result.stdout}
    ...    plan_id: ${PLAN}\n    changeset_id: ${CHANGESET}\n    artifacts.0.path: hello.txt\n
    ...    summary.total: 6\n    summary.creates: 2\n    summary.renames: 1\n
    Should Match Regexp    ${result.stdout}    (?m)^artifacts\\.\\d\\.old_path: a\\.txt$
    ${text}=    Rich Output    plan    artifacts    ${PLAN}
    Output Should Contain All    ${text}    artifacts of plan ${PLAN}    a.txt -> moved/a.txt
    ...    img/logo.bin    exec    6 files: 2 created, 2 modified, 1 deleted, 1 renamed
    ${env}=    Json And Yaml Should Agree    plan-artifacts.json    plan    artifacts    ${PLAN}
    ${rows}=    Evaluate    {a['path']: a for a in $env['data']['artifacts']}
    Should Be Equal As Integers    ${rows}[img/logo.bin][size]    17
    Should Be True    ${rows}[img/logo.bin][binary]
    Should Be Equal    ${rows}[old.txt][operation]    delete
    Should Be Equal As Integers    ${rows}[old.txt][size]    0
    Should Be Equal    ${rows}[src/app.py][tool_name]    edit_file
    Should Be Equal As Integers    ${env}[data][summary][total]    6

Invocations In Every Format
    ${result}=    Changeledger    plan    invocations    ${PLAN}
    Output Should Contain All    ${result.stdout}
    ...    invocations.0.tool_name: write_file\n    invocations.5.tool_name: exec\n
    ...    invocations.6.status: error\n    invocations.6.error.type: ValidationError\n
    ...    invocations.3.arguments.dst: moved/a.txt\n    count: 7
    ${text}=    Rich Output    plan    invocations    ${PLAN}
    Output Should Contain All    ${text}    tool calls of plan ${PLAN}    move_file
    ...    src=a.txt, dst=moved/a.txt    ValidationError
    ${env}=    Json And Yaml Should Agree    plan-invocations.json    plan    invocations    ${PLAN}
    ${tools}=    Evaluate    [c['tool_name'] for c in $env['data']['invocations']]
    ${expected}=    Create List    write_file    edit_file    delete_file    move_file
    ...    edit_file    exec    edit_file
    Lists Should Be Equal    ${tools}    ${expected}
    Should Be Equal    ${env}[data][invocations][6][status]    error
    Should Be Empty    ${env}[data][invocations][6][change_ids]
    Length Should Be    ${env}[data][invocations][0][change_ids]    1

Invocations Filters
    ${env}=    Json And Yaml Should Agree    plan-invocations.json
    ...    plan    invocations    ${PLAN}    --tool    edit_file
    ${seqs}=    Evaluate    [c['seq'] for c in $env['data']['invocations']]
    ${expected}=    Create List    ${2}    ${5}    ${7}
    Lists Should Be Equal    ${seqs}    ${expected}
    ${env}=    Json And Yaml Should Agree    plan-invocations.json
    ...    plan    invocations    ${PLAN}    --errors
    Should Be Equal As Integers    ${env}[data][count]    1
    Should Be Equal As Integers    ${env}[data][invocations][0][seq]    7
    ${result}=    Changeledger    plan    invocations    ${PLAN}    --tool    move_file
    Should Contain    ${result.stdout}    count: 1
    ${result}=    Changeledger    plan    invocations    ${PLAN}    --tool    write_file    --errors
    Should Contain    ${result.stdout}    count: 0

Plain Output Is One Key Value Pair Per Line
    [Documentation]    docs/cli.md: plain is "stable `key: value` lines". Recorded arguments
    ...    hold newlines (write_file's content "hi\\n"); they must not break a line.
    FOR    ${command}    IN    status    artifacts    invocations
        ${result}=    Changeledger    plan    ${command}    ${PLAN}
        ${bad}=    Evaluate
        ...    [line for line in $result.stdout.split('\\n') if not re.match(r'^[A-Za-z0-9_.]+: ', line)]
        ...    modules=re
        Should Be Empty    ${bad}    msg=plan ${command}: lines that are not `key: value`: ${bad}
    END

Help Of Every Review Command
    ${status}=    Changeledger    plan    status    --help
    Output Should Contain All    ${status.stdout}    Usage: changeledger plan status [OPTIONS] PLAN
    ...    state, times, counts, error and apply result    --format [plain|rich|json|yaml]
    ${diff}=    Changeledger    plan    diff    --help
    Output Should Contain All    ${diff.stdout}    Usage: changeledger plan diff [OPTIONS] PLAN
    ...    --stat    --path GLOB    --entries    [plain|rich|json|yaml|patch]    git apply
    ${artifacts}=    Changeledger    plan    artifacts    -h
    Output Should Contain All    ${artifacts.stdout}
    ...    Usage: changeledger plan artifacts [OPTIONS] PLAN    files the plan changes    --format
    ${calls}=    Changeledger    plan    invocations    --help
    Output Should Contain All    ${calls.stdout}    Usage: changeledger plan invocations [OPTIONS] PLAN
    ...    --tool NAME    --errors    audit trail
    ${plan}=    Changeledger    plan    --help
    Output Should Contain All    ${plan.stdout}    status    diff    artifacts    invocations
    FOR    ${command}    IN    status    diff    artifacts    invocations
        ${result}=    Changeledger    plan    ${command}    --help
        Should Be Empty    ${result.stderr}
    END

Unknown Plan Is Not Found In Every Command
    FOR    ${command}    IN    status    diff    artifacts    invocations
        ${env}=    Should Fail With    3    ${{ ['plan', $command, $UNKNOWN_ID] }}
        ...    plan ${UNKNOWN_ID} not found
        Should Be Equal    ${env}[error][type]    NotFoundError
        Should Be Equal    ${env}[command]    plan ${command}
    END
    ${result}=    Changeledger    plan    diff    ${UNKNOWN_ID}    --format    patch    rc=3
    Error Should Be One Line    ${result}    ${UNKNOWN_ID}
    Should Be Empty    ${result.stdout}
    ${result}=    Changeledger    plan    diff    ${UNKNOWN_ID}    --format    rich    rc=3
    Should Be Empty    ${result.stdout}

Malformed Plan Id Is Invalid Input
    FOR    ${command}    IN    status    diff    artifacts    invocations
        ${env}=    Should Fail With    2    ${{ ['plan', $command, 'not-a-ulid'] }}
        ...    not-a-ulid    not a valid id
        Should Be Equal    ${env}[error][type]    ValidationError
    END

Patch Format Is Only For Diff
    FOR    ${command}    IN    status    artifacts    invocations
        ${result}=    Changeledger    plan    ${command}    ${PLAN}    --format    patch    rc=2
        Error Should Be One Line    ${result}    'patch' is not one of
    END

No Ledger Is Not Found
    ${empty}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-noledger-")    modules=tempfile
    ${result}=    Changeledger    plan    status    ${PLAN}    rc=3    cwd=${empty}
    Error Should Be One Line    ${result}    no ledger found    changeledger init
    [Teardown]    Remove Directory    ${empty}    recursive=True

Cancelled Plan Still Has A Status But Its Artifacts Are Gone
    [Setup]    Use A Copy Of The Ledger
    ${env}=    Changeledger Json    plan    cancel    ${PLAN}    --reason    reviewed and rejected
    Should Be Equal As Integers    ${env}[data][cleanup][entries]    6
    ${result}=    Changeledger    plan    status    ${PLAN}
    Output Should Contain All    ${result.stdout}    state: cancelled\n
    ...    artifacts: cleaned up: changeset ${CHANGESET} of plan ${PLAN} was cleaned up
    ...    error.message: cancelled: reviewed and rejected
    ${env}=    Json And Yaml Should Agree    plan-status.json    plan    status    ${PLAN}
    Should Start With    ${env}[data][artifacts]    cleaned up:
    Should Be Equal    ${env}[data][execution]    ${None}
    ${text}=    Rich Output    plan    status    ${PLAN}
    Should Contain    ${text}    cancelled
    FOR    ${command}    IN    diff    artifacts    invocations
        ${env}=    Should Fail With    3    ${{ ['plan', $command, $PLAN] }}
        ...    changeset ${CHANGESET}    cleaned up
        Should Be Equal    ${env}[error][type]    MissingArtifactError
    END
    ${result}=    Changeledger    plan    diff    ${PLAN}    --format    patch    rc=3
    Error Should Be One Line    ${result}    ${CHANGESET}
    Should Be Empty    ${result.stdout}
    [Teardown]    Remove The Copy

Damaged Ledger Names The Missing Blob And File
    [Setup]    Use A Copy Of The Ledger
    ${digest}=    Blob Of    src/app.py
    Delete Blob    ${digest}
    FOR    ${command}    IN    status    diff    artifacts    invocations
        ${env}=    Should Fail With    3    ${{ ['plan', $command, $PLAN] }}
        ...    ${digest}    src/app.py
        Should Be Equal    ${env}[error][type]    MissingArtifactError
    END
    FOR    ${fmt}    IN    patch    rich
        ${result}=    Changeledger    plan    diff    ${PLAN}    --format    ${fmt}    rc=3
        Error Should Be One Line    ${result}    ${digest}    src/app.py
        Should Be Empty    ${result.stdout}
    END
    [Teardown]    Remove The Copy
