*** Settings ***
Documentation     What a user sees when things go wrong or secrets are involved, each command
...               in its own process: secrets masked in the audit trail and in diffs of
...               sensitive files (`--show-secrets` to see them, a masked patch refused),
...               bad input refused with one line and nothing written, a database of another
...               program left alone, a plan whose agent was killed continued by the next
...               run, an apply journal committed to a repository left alone, a symlinked
...               ledger refused, and a failed apply applied again once the fault is gone.
Resource          resources/common.resource
Test Setup        Make Workspace And Plan Folder
Test Teardown     Remove Workspace And Plan Folder

*** Variables ***
${TOKEN}          ghp_abcdefghijklmnopqrstuvwxyz0123456789AB

*** Keywords ***
Make Workspace And Plan Folder
    Make Workspace
    ${plans}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-plans-")    modules=tempfile
    Set Test Variable    ${PLANS}    ${plans}

Remove Workspace And Plan Folder
    Remove Directory    ${WS}    recursive=True
    Remove Directory    ${PLANS}    recursive=True

Run Plan File
    [Documentation]    Write ${steps} (JSON objects) as a plan file and run it; return the
    ...    envelope.
    [Arguments]    ${steps}    ${rc}=0
    Create File    ${PLANS}/plan.json    {"title": "t", "steps": [${steps}]}
    ${env}=    Changeledger Json    plan    run    ${PLANS}/plan.json    rc=${rc}
    RETURN    ${env}

*** Test Cases ***
Secrets In Tool Calls Are Not Written
    Create File    ${WS}/.env    API_KEY=old-value\n
    Changeledger    init
    ${env}=    Run Plan File
    ...    {"tool": "write_file", "args": {"path": "notes.txt", "content": "push with ${TOKEN}\\n"}}, {"tool": "write_file", "args": {"path": ".env", "content": "API_KEY=new-value\\n"}}
    ${calls}=    Changeledger    plan    invocations    ${env}[data][plan_id]    --format    json
    Should Not Contain    ${calls.stdout}    ${TOKEN}
    Should Not Contain    ${calls.stdout}    new-value
    Should Contain    ${calls.stdout}    [REDACTED:github-token]

Diffs Of Sensitive Files Are Masked Unless Asked
    Create File    ${WS}/.env    API_KEY=old-value\n
    Changeledger    init
    ${env}=    Run Plan File
    ...    {"tool": "write_file", "args": {"path": ".env", "content": "API_KEY=new-value\\n"}}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    ${diff}=    Changeledger    plan    diff    ${plan}
    Should Contain    ${diff.stdout}    +API_KEY=[REDACTED]
    Should Not Contain    ${diff.stdout}    new-value
    ${shown}=    Changeledger    plan    diff    ${plan}    --show-secrets
    Should Contain    ${shown.stdout}    +API_KEY=new-value
    ${refused}=    Changeledger    plan    diff    ${plan}    --format    patch    rc=2
    Error Should Be One Line    ${refused}    sensitive file .env    --show-secrets
    Should Be Empty    ${refused.stdout}

Path Escapes Are Refused And Nothing Is Written
    Create File    ${WS}/a.txt    a\n
    Changeledger    init
    ${before}=    Workspace Snapshot
    ${env}=    Run Plan File
    ...    {"tool": "write_file", "args": {"path": "../outside.txt", "content": "x"}}    rc=2
    Should Contain    ${env}[error][message]    outside the workspace
    ${plans}=    Plan States
    Should Be Empty    ${plans}
    Workspace Should Be Unchanged    ${before}
    ${outside}=    Evaluate    os.path.join(os.path.dirname($WS), "outside.txt")    modules=os
    File Should Not Exist    ${outside}

A Symlink To The Root Does Not Reach Git
    Create Directory    ${WS}/.git
    Create File    ${WS}/.git/config    [core]\n
    Changeledger    init
    Evaluate    os.symlink(".", $WS + "/self")    modules=os
    ${env}=    Run Plan File
    ...    {"tool": "write_file", "args": {"path": "self/.git/config", "content": "[core]\\n\\thooksPath = /tmp\\n"}}    rc=2
    Should Contain    ${env}[error][message]    .git/
    ${config}=    Get File    ${WS}/.git/config
    Should Be Equal    ${config}    [core]\n

A Database Of Another Program Is Left Alone
    Evaluate    sqlite3.connect($WS + "/app.db").execute("CREATE TABLE notes (body TEXT)").connection.commit()    modules=sqlite3
    ${before}=    Evaluate    hashlib.sha256(open($WS + "/app.db", "rb").read()).hexdigest()    modules=hashlib
    ${result}=    Changeledger    --db    ${WS}/app.db    plan    list    rc=3
    Error Should Be One Line    ${result}    not a changeledger ledger    notes
    ${after}=    Evaluate    hashlib.sha256(open($WS + "/app.db", "rb").read()).hexdigest()    modules=hashlib
    Should Be Equal    ${after}    ${before}

A Plan Whose Agent Was Killed Is Continued
    Changeledger    init
    ${plan}=    Changeledger Json    plan    create    killed
    ${id}=    Set Variable    ${plan}[data][plan_id]
    ${code}=    Catenate    SEPARATOR=\n
    ...    import os, signal, sys
    ...    from changeledger import Ledger, PlanService
    ...    with Ledger.open(sys.argv[1]) as ledger:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}with PlanService(ledger.plans, ledger.changesets).execute(sys.argv[2]) as run:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}run.call("write_file", {"path": "first.txt", "content": "1\\n"})
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}${SPACE}os.kill(os.getpid(), signal.SIGKILL)
    ${python}=    Evaluate    sys.executable    modules=sys
    ${killed}=    Run Process    ${python}    -c    ${code}    ${WS}/.changeledger/ledger.db    ${id}
    Should Be Equal As Integers    ${killed.rc}    -9
    ${states}=    Plan States
    Should Be Equal    ${states}[${id}]    executing
    Create File    ${PLANS}/more.json    {"title": "t", "steps": [{"tool": "write_file", "args": {"path": "second.txt", "content": "2\\n"}}]}
    ${env}=    Changeledger Json    plan    run    ${PLANS}/more.json    --plan    ${id}
    Should Be Equal    ${env}[data][state]    executed
    ${artifacts}=    Changeledger Json    plan    artifacts    ${id}
    ${paths}=    Evaluate    sorted(a['path'] for a in $artifacts['data']['artifacts'])
    Should Be Equal    ${paths}    ${{["first.txt", "second.txt"]}}

A Journal Committed To A Repository Is Left Alone
    [Documentation]    Another clone's apply journal, found in this workspace: never rolled
    ...    back (its backup would overwrite a.txt), reported on stderr with how to remove it.
    Create File    ${WS}/a.txt    mine\n
    Changeledger    init
    ${folder}=    Set Variable    ${WS}/.changeledger/journal/01HZZZZZZZZZZZZZZZZZZZZZZ1
    Create Directory    ${folder}/originals
    Create File    ${folder}/originals/0    theirs\n
    Create File    ${folder}/journal.json    {"format": 2, "plan_id": "01HZZZZZZZZZZZZZZZZZZZZZZ1", "ledger_id": "01HZZZZZZZZZZZZZZZZZZZZZZ2", "apply_id": "01HZZZZZZZZZZZZZZZZZZZZZZ3", "root": "${WS}", "token": "0123456789ab", "created_dirs": [], "steps": [{"path": "a.txt", "before": "${{'0' * 64}}", "after": null, "mode": null, "backup": "originals/0", "staged": null, "beside_old": null, "beside_new": null}]}
    ${result}=    Changeledger    plan    list
    Should Contain    ${result.stderr}    warning: left alone: ${folder}
    Should Contain    ${result.stderr}    rm -r ${folder}
    ${content}=    Get File    ${WS}/a.txt
    Should Be Equal    ${content}    mine\n
    File Should Exist    ${folder}/journal.json

A Symlinked Ledger Is Refused
    ${elsewhere}=    Evaluate    tempfile.mkdtemp(prefix="cl-robot-elsewhere-")    modules=tempfile
    Evaluate    os.symlink($elsewhere, $WS + "/.changeledger")    modules=os
    ${result}=    Changeledger    init    rc=2
    Error Should Be One Line    ${result}    is a symlink
    ${inside}=    List Directory    ${elsewhere}
    Should Be Empty    ${inside}
    Remove Directory    ${elsewhere}    recursive=True

A Failed Apply Keeps The Staged Work For Another Try
    Create File    ${WS}/a.txt    a\n
    Changeledger    init
    ${env}=    Run Plan File
    ...    {"tool": "write_file", "args": {"path": "a.txt", "content": "changed\\n"}}
    ${plan}=    Set Variable    ${env}[data][plan_id]
    ${failed}=    Run Process    ${CL}    plan    apply    ${plan}    cwd=${WS}    env:CHANGELEDGER_DB=
    ...    env:CHANGELEDGER_TEST_FAIL_AT_STEP=1
    Should Be Equal As Integers    ${failed.rc}    1
    ${states}=    Plan States
    Should Be Equal    ${states}[${plan}]    apply_failed
    ${content}=    Get File    ${WS}/a.txt
    Should Be Equal    ${content}    a\n
    ${applied}=    Changeledger Json    plan    apply    ${plan}
    Should Be Equal    ${applied}[data][state]    applied
    Should Be Equal    ${applied}[data][files][0][new_mode]    0644
    ${content}=    Get File    ${WS}/a.txt
    Should Be Equal    ${content}    changed\n
