*** Settings ***
Documentation     A plan's life through the CLI, every step a separate process: create, list,
...               run a plan file, exec a command, apply (all, --only, --dry-run), cancel,
...               conflicts, and the exit code and one-line error of each kind of bad input.
...               Staging never writes to the workspace; only `plan apply` does, and a refused
...               apply leaves every byte as it was.
Resource          resources/common.resource
Suite Setup       Make Ledger Template
Suite Teardown    Remove Directory    ${TEMPLATE}    recursive=True
Test Setup        Make Ledger Workspace
Test Teardown     Remove Directory    ${ROOT}    recursive=True

*** Variables ***
${UNKNOWN_ID}     01ARZ3NDEKTSV4RRFFQ69G5FAV
${APP}            print('hello')\n
${NOTES}          one\ntwo\nthree\n

*** Keywords ***
Make Ledger Template
    [Documentation]    `init` once; each test copies the fresh ledger (init is the slow part).
    ${tmp}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-template-")    modules=tempfile
    Set Suite Variable    ${TEMPLATE}    ${tmp}
    Changeledger    init    cwd=${TEMPLATE}
    File Should Exist    ${TEMPLATE}/.changeledger/ledger.db

Make Ledger Workspace
    [Documentation]    ${ROOT}/ws is a workspace with an empty ledger and a few files;
    ...    plan files go in ${ROOT}/plans, outside it.
    ${tmp}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-")    modules=tempfile
    Set Test Variable    ${ROOT}    ${tmp}
    Set Test Variable    ${WS}    ${ROOT}/ws
    Set Test Variable    ${PLANS}    ${ROOT}/plans
    Copy Directory    ${TEMPLATE}    ${WS}
    Create Directory    ${PLANS}
    Create File    ${WS}/README.md    readme\n
    Create File    ${WS}/a.txt    alpha\n
    Create File    ${WS}/old.txt    old\n
    Create File    ${WS}/src/app.py    ${APP}
    Create File    ${WS}/notes/p.txt    ${NOTES}
    Create File    ${WS}/run.sh    \#!/bin/sh\necho hello\n
    Evaluate    os.chmod($WS + '/run.sh', 0o755)    modules=os
    Create File    ${WS}/.git/config    [core]\n

Write Plan File
    [Documentation]    Write ${lines} joined by newlines to ${PLANS}/${name}; return its path.
    [Arguments]    ${name}    @{lines}
    ${text}=    Catenate    SEPARATOR=\n    @{lines}
    Create File    ${PLANS}/${name}    ${text}\n
    RETURN    ${PLANS}/${name}

Write One Step Plan
    [Documentation]    A JSON plan file (YAML reads it too) with the single step ${step}.
    [Arguments]    ${name}    ${step}
    ${path}=    Write Plan File    ${name}    {"title": "one step", "steps": [${step}]}
    RETURN    ${path}

Create Plan
    [Arguments]    ${title}    @{options}
    ${env}=    Changeledger Json    plan    create    ${title}    @{options}
    Should Be Equal    ${env}[data][state]    created
    RETURN    ${env}[data][plan_id]

Run Plan File
    [Documentation]    `plan run` ${file}; it must end executed. Returns the envelope.
    [Arguments]    ${file}    @{options}
    ${env}=    Changeledger Json    plan    run    ${file}    @{options}
    Should Be Equal    ${env}[data][state]    executed
    RETURN    ${env}

Data Should Start With Plan Id
    [Arguments]    ${env}    ${plan_id}
    ${first}=    Evaluate    next(iter($env['data']))
    Should Be Equal    ${first}    plan_id
    Should Be Equal    ${env}[data][plan_id]    ${plan_id}

Applied Files Should Be
    [Documentation]    The `plan apply` envelope lists exactly these "path operation" pairs.
    [Arguments]    ${env}    ${key}    @{expected}
    ${got}=    Evaluate    sorted(f"{f['path']} {f['operation']}" for f in $env['data'][$key])
    ${want}=    Evaluate    sorted($expected)
    Lists Should Be Equal    ${got}    ${want}

File Should Hold
    [Documentation]    ${path} exists and holds exactly ${content}.
    [Arguments]    ${path}    ${content}
    ${actual}=    Get File    ${path}
    Should Be Equal    ${actual}    ${content}    msg=${path}

Ledger Should Be Empty
    [Documentation]    No plan, changeset, entry, invocation or blob in the ledger (read
    ...    straight from its SQLite file, read-only, to keep the suite fast).
    ${counts}=    Evaluate
    ...    (lambda db: {t: db.execute(f'select count(*) from {t}').fetchone()[0] for t in ('plans', 'changesets', 'changeset_entries', 'tool_invocations', 'blobs')})(sqlite3.connect(pathlib.Path($WS, '.changeledger', 'ledger.db').as_uri() + '?mode=ro', uri=True))
    ...    modules=sqlite3,pathlib
    ${nonzero}=    Evaluate    {t: n for t, n in $counts.items() if n}
    Should Be Empty    ${nonzero}    msg=an invalid plan file left rows in the ledger: ${nonzero}

Snapshot Should Have Paths
    [Arguments]    ${snapshot}    @{paths}
    ${got}=    Evaluate    sorted($snapshot)
    ${want}=    Evaluate    sorted($paths)
    Lists Should Be Equal    ${got}    ${want}

Plan File Should Be Refused
    [Documentation]    `plan run ${file}` exits ${rc} with one `error:` line containing
    ...    ${fragments}; nothing is created in the ledger and the workspace is unchanged.
    [Arguments]    ${file}    ${rc}    @{fragments}
    ${before}=    Workspace Snapshot
    ${result}=    Changeledger    plan    run    ${file}    rc=${rc}
    Error Should Be One Line    ${result}    @{fragments}
    Should Be Empty    ${result.stdout}
    Ledger Should Be Empty
    Workspace Should Be Unchanged    ${before}

*** Test Cases ***
Plans Created In One Process Are Listed With Their States By Another
    [Documentation]    create, run and list are separate processes; a fresh `plan list` from
    ...    a subdirectory (the ledger is found by walking up) sees every state.
    ${created}=    Create Plan    Tidy up    --description    just a plan
    ${file}=    Write One Step Plan    w.json
    ...    {"tool": "write_file", "args": {"path": "b.txt", "content": "b\\n"}}
    ${env}=    Run Plan File    ${file}
    ${executed}=    Set Variable    ${env}[data][plan_id]
    ${env}=    Changeledger Json    plan    list    cwd=${WS}/src
    Should Be Equal As Integers    ${env}[data][count]    2
    ${first}    ${second}=    Set Variable    ${env}[data][plans]
    Should Be Equal    ${first}[plan_id]    ${created}
    Should Be Equal    ${first}[state]    created
    Should Be Equal    ${first}[title]    Tidy up
    Should Be Equal    ${first}[description]    just a plan
    Should Be Equal    ${second}[plan_id]    ${executed}
    Should Be Equal    ${second}[state]    executed
    ${env}=    Changeledger Json    plan    list    --state    created
    Should Be Equal As Integers    ${env}[data][count]    1
    Should Be Equal    ${env}[data][plans][0][plan_id]    ${created}

Run Stages Every Tool Without Writing Then Apply Writes Exactly The Changes
    ${file}=    Write Plan File    every-tool.yaml
    ...    title: Every tool
    ...    steps:
    ...    ${SPACE}${SPACE}- tool: write_file
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {path: new/hello.txt, content: "hi\\n"}
    ...    ${SPACE}${SPACE}- tool: edit_file
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {path: src/app.py, old: "print('hello')", new: "print('hi')"}
    ...    ${SPACE}${SPACE}- tool: edit_file
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {path: run.sh, old: hello, new: bye}
    ...    ${SPACE}${SPACE}- tool: move_file
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {src: a.txt, dst: b.txt}
    ...    ${SPACE}${SPACE}- tool: delete_file
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {path: old.txt}
    ...    ${SPACE}${SPACE}- tool: apply_patch
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}args: {patch: "--- a/notes/p.txt\\n+++ b/notes/p.txt\\n@@ -1,3 +1,3 @@\\n one\\n-two\\n+TWO\\n three\\n"}
    ${before}=    Workspace Snapshot
    ${env}=    Run Plan File    ${file}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    Data Should Start With Plan Id    ${env}    ${plan}
    Length Should Be    ${env}[data][steps]    6
    Should Be Equal As Integers    ${env}[data][changes]    6
    Workspace Should Be Unchanged    ${before}
    ${env}=    Changeledger Json    plan    apply    ${plan}
    Data Should Start With Plan Id    ${env}    ${plan}
    Should Be Equal    ${env}[data][state]    applied
    Applied Files Should Be    ${env}    files
    ...    a.txt delete    b.txt create    new/hello.txt create    old.txt delete
    ...    notes/p.txt modify    run.sh modify    src/app.py modify
    ${after}=    Workspace Snapshot
    Snapshot Should Have Paths    ${after}
    ...    .git    .git/config    README.md    b.txt    new    new/hello.txt
    ...    notes    notes/p.txt    run.sh    src    src/app.py
    File Should Hold    ${WS}/new/hello.txt    hi\n
    File Should Hold    ${WS}/src/app.py    print('hi')\n
    File Should Hold    ${WS}/b.txt    alpha\n
    File Should Hold    ${WS}/notes/p.txt    one\nTWO\nthree\n
    File Should Hold    ${WS}/run.sh    \#!/bin/sh\necho bye\n
    Should Start With    ${after}[run.sh]    0o755    msg=the edit lost the executable mode
    Should Be Equal    ${after}[b.txt]    ${before}[a.txt]    msg=the move changed bytes or mode
    Should Be Equal    ${after}[README.md]    ${before}[README.md]
    Should Be Equal    ${after}[.git/config]    ${before}[.git/config]
    ${result}=    Changeledger    plan    apply    ${plan}    rc=5
    Error Should Be One Line    ${result}    from applied

Exec Records What A Command Changes And Only Apply Writes It
    ${plan}=    Create Plan    Exec
    ${before}=    Workspace Snapshot
    ${env}=    Changeledger Json    plan    exec    ${plan}    --    sh    -c
    ...    echo made > made.txt; echo more >> a.txt; rm old.txt; mkdir -p .git; echo hacked > .git/config
    Data Should Start With Plan Id    ${env}    ${plan}
    Should Be Equal    ${env}[data][state]    executed
    Should Be Equal As Integers    ${env}[data][exit_code]    0
    Should Be Equal As Integers    ${env}[data][changes]    3    msg=.git/ must never be captured
    Workspace Should Be Unchanged    ${before}
    ${env}=    Changeledger Json    plan    apply    ${plan}
    Should Be Equal    ${env}[data][state]    applied
    Applied Files Should Be    ${env}    files    made.txt create    a.txt modify    old.txt delete
    File Should Hold    ${WS}/made.txt    made\n
    File Should Hold    ${WS}/a.txt    alpha\nmore\n
    File Should Not Exist    ${WS}/old.txt
    File Should Hold    ${WS}/.git/config    [core]\n

Exec Of A Failing Command Fails The Plan And Stages Nothing
    ${plan}=    Create Plan    Exec fails
    ${before}=    Workspace Snapshot
    ${env}=    Changeledger Json    plan    exec    ${plan}    --    sh    -c
    ...    echo oops > oops.txt; exit 3    rc=1
    Data Should Start With Plan Id    ${env}    ${plan}
    Should Contain    ${env}[error][message]    exited with 3
    Workspace Should Be Unchanged    ${before}
    Plan State Should Be    ${plan}    failed
    ${result}=    Changeledger    plan    apply    ${plan}    rc=5
    Error Should Be One Line    ${result}    from failed
    Workspace Should Be Unchanged    ${before}

Cancel Deletes The Staged Changes And Is Final
    ${file}=    Write Plan File    two.yaml
    ...    title: Two writes
    ...    steps:
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: a.txt, content: "A\\n"}}
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: c.txt, content: "C\\n"}}
    ${before}=    Workspace Snapshot
    ${env}=    Run Plan File    ${file}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    ${env}=    Changeledger Json    plan    cancel    ${plan}    --reason    not wanted
    Data Should Start With Plan Id    ${env}    ${plan}
    Should Be Equal    ${env}[data][state]    cancelled
    Should Be Equal    ${env}[data][reason]    not wanted
    ${cleanup}=    Set Variable    ${env}[data][cleanup]
    Should Be Equal As Integers    ${cleanup}[changesets]    1
    Should Be Equal As Integers    ${cleanup}[entries]    2
    Should Be Equal As Integers    ${cleanup}[invocations]    2
    Should Be True    ${cleanup}[blobs] >= 2    msg=the staged contents were not deleted
    ${result}=    Changeledger    plan    apply    ${plan}    rc=5
    Error Should Be One Line    ${result}    from cancelled
    Plan State Should Be    ${plan}    cancelled
    Workspace Should Be Unchanged    ${before}

Apply Refuses A Changed Workspace And Writes Nothing
    ${file}=    Write Plan File    modify.yaml
    ...    title: Modify
    ...    steps:
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: README.md, content: "new readme\\n"}}
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: a.txt, content: "staged\\n"}}
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: c.txt, content: "C\\n"}}
    ...    ${SPACE}${SPACE}- {tool: delete_file, args: {path: old.txt}}
    ${env}=    Run Plan File    ${file}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    Create File    ${WS}/a.txt    edited by a person\n
    ${before}=    Workspace Snapshot
    ${result}=    Changeledger    plan    apply    ${plan}    --dry-run    rc=4
    Error Should Be One Line    ${result}    a.txt
    Should Not Contain    ${result.stderr}    README.md
    Workspace Should Be Unchanged    ${before}
    ${env}=    Changeledger Json    plan    apply    ${plan}    rc=4
    Should Be Equal    ${env}[error][type]    ConflictError
    Should Contain    ${env}[error][message]    a.txt
    Should Contain    ${env}[error][message]    nothing was written
    Workspace Should Be Unchanged    ${before}
    Plan State Should Be    ${plan}    executed

Apply Lists Every Conflicting Create And Delete
    ${file}=    Write Plan File    create-delete.yaml
    ...    title: Create and delete
    ...    steps:
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: c.txt, content: "C\\n"}}
    ...    ${SPACE}${SPACE}- {tool: delete_file, args: {path: old.txt}}
    ${env}=    Run Plan File    ${file}
    Create File    ${WS}/c.txt    someone else's c\n
    Remove File    ${WS}/old.txt
    ${before}=    Workspace Snapshot
    ${result}=    Changeledger    plan    apply    ${env}[data][plan_id]    rc=4
    Error Should Be One Line    ${result}    c.txt    old.txt
    Workspace Should Be Unchanged    ${before}

Dry Run Writes Nothing And Only Applies Just The Matching Paths
    ${file}=    Write Plan File    four.yaml
    ...    title: Four files
    ...    steps:
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: src/app.py, content: "print('x')\\n"}}
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: docs/new.md, content: "doc\\n"}}
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: a.txt, content: "A\\n"}}
    ...    ${SPACE}${SPACE}- {tool: delete_file, args: {path: notes/p.txt}}
    ${env}=    Run Plan File    ${file}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    ${before}=    Workspace Snapshot
    ${env}=    Changeledger Json    plan    apply    ${plan}    --dry-run
    Should Be True    ${env}[data][dry_run]
    Should Be Equal    ${env}[data][state]    executed
    Applied Files Should Be    ${env}    files
    ...    src/app.py modify    docs/new.md create    a.txt modify    notes/p.txt delete
    Workspace Should Be Unchanged    ${before}
    ${env}=    Changeledger Json    plan    apply    ${plan}    --only    src/*    --only    docs/*
    Should Be Equal    ${env}[data][state]    applied
    Applied Files Should Be    ${env}    files    src/app.py modify    docs/new.md create
    Applied Files Should Be    ${env}    skipped    a.txt modify    notes/p.txt delete
    File Should Hold    ${WS}/src/app.py    print('x')\n
    File Should Hold    ${WS}/docs/new.md    doc\n
    ${after}=    Workspace Snapshot
    Should Be Equal    ${after}[a.txt]    ${before}[a.txt]
    Should Be Equal    ${after}[notes/p.txt]    ${before}[notes/p.txt]

Path Outside The Workspace Is Invalid Input
    ${file}=    Write One Step Plan    outside.json
    ...    {"tool": "write_file", "args": {"path": "../x", "content": "a"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    outside the workspace
    File Should Not Exist    ${ROOT}/x

Absolute Path Is Invalid Input
    ${file}=    Write One Step Plan    absolute.json
    ...    {"tool": "write_file", "args": {"path": "/etc/passwd", "content": "a"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    absolute

Path Into Git Directory Is Invalid Input
    ${file}=    Write One Step Plan    git.json
    ...    {"tool": "write_file", "args": {"path": ".git/config", "content": "a"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    .git/

Path Into The Ledger Directory Is Invalid Input
    ${file}=    Write One Step Plan    ledger.json
    ...    {"tool": "delete_file", "args": {"path": ".changeledger/ledger.db"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    .changeledger/

Symlink Leading Outside The Workspace Is Invalid Input
    ${outside}=    Set Variable    ${ROOT}/outside
    Create Directory    ${outside}
    Evaluate    os.symlink($outside, $WS + '/evil')    modules=os
    ${file}=    Write One Step Plan    symlink.json
    ...    {"tool": "write_file", "args": {"path": "evil/x", "content": "a"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    symlink
    Directory Should Be Empty    ${outside}

NUL Byte In A Path Is Invalid Input
    ${file}=    Write One Step Plan    nul.json
    ...    {"tool": "write_file", "args": {"path": "a\\u0000b", "content": "a"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.path    NUL

Malformed YAML Is Invalid Input
    ${file}=    Write Plan File    bad.yaml    title: broken    steps: [unclosed
    Plan File Should Be Refused    ${file}    2    bad.yaml    YAML

JSON Plan File That Is Not An Object Is Invalid Input
    ${file}=    Write Plan File    list.json    [1, 2]
    Plan File Should Be Refused    ${file}    2    list.json    mapping

Unknown Tool Is Invalid Input
    ${file}=    Write One Step Plan    unknown.json    {"tool": "frobnicate", "args": {}}
    Plan File Should Be Refused    ${file}    2    steps[1].tool    frobnicate

Wrong Argument Type Is Invalid Input
    ${file}=    Write One Step Plan    type.json
    ...    {"tool": "write_file", "args": {"path": "b.txt", "content": 5}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.content    str

Missing Required Argument Is Invalid Input
    ${file}=    Write One Step Plan    missing.json    {"tool": "write_file", "args": {"path": "b.txt"}}
    Plan File Should Be Refused    ${file}    2    steps[1].args.content    missing

An Invalid Later Step Refuses The Whole File Before Any Step Runs
    ${file}=    Write Plan File    later.yaml
    ...    title: Valid then invalid
    ...    steps:
    ...    ${SPACE}${SPACE}- {tool: write_file, args: {path: b.txt, content: "b"}}
    ...    ${SPACE}${SPACE}- {tool: move_file, args: {src: a.txt, dst: ../a.txt}}
    Plan File Should Be Refused    ${file}    2    steps[2].args.dst    outside the workspace

Missing Plan File Is Invalid Input
    Plan File Should Be Refused    ${PLANS}/absent.yaml    2    absent.yaml    does not exist

Edit Whose Text Is Absent Fails The Plan
    ${file}=    Write One Step Plan    edit.json
    ...    {"tool": "edit_file", "args": {"path": "src/app.py", "old": "no such text", "new": "x"}}
    ${before}=    Workspace Snapshot
    ${env}=    Changeledger Json    plan    run    ${file}    rc=1
    Should Contain    ${env}[error][message]    src/app.py
    ${plan}=    Set Variable    ${env}[data][plan_id]
    Plan State Should Be    ${plan}    failed
    Workspace Should Be Unchanged    ${before}

Unknown Plan Id Is Not Found
    ${env}=    Changeledger Json    plan    apply    ${UNKNOWN_ID}    rc=3
    Should Be Equal    ${env}[error][type]    NotFoundError
    Should Contain    ${env}[error][message]    ${UNKNOWN_ID}

Malformed Plan Id Is Invalid Input
    ${result}=    Changeledger    plan    cancel    not-a-ulid    rc=2
    Error Should Be One Line    ${result}    not-a-ulid

Empty Plan Id Is Invalid Input
    ${result}=    Changeledger    plan    exec    ${EMPTY}    --    true    rc=2
    Error Should Be One Line    ${result}    empty

Usage Error Is One Error Line And A JSON Envelope
    [Documentation]    The contract: every error is one `error:` line on stderr and, with
    ...    `--format json`, an envelope with status "error" — usage errors included.
    ${env}=    Changeledger Json    plan    list    --state    bogus    rc=2
    Should Contain    ${env}[error][message]    bogus
