*** Settings ***
Documentation     The ledger's set-up commands as a user runs them: init, db current,
...               db check, db downgrade/upgrade, and the exit codes of bad input.
Resource          resources/common.resource
Test Setup        Make Workspace
Test Teardown     Remove Directory    ${WS}    recursive=True

*** Test Cases ***
Init Creates An Owner-Only Ledger That Ignores Itself For Git
    ${r}=    Changeledger    init
    Should Match Regexp    ${r.stdout}    revision: \\d{4}
    Should Contain    ${r.stdout}    created: yes
    File Should Exist    ${WS}/.changeledger/ledger.db
    ${ignore}=    Get File    ${WS}/.changeledger/.gitignore
    Should Contain    ${ignore}    *
    ${mode}=    Evaluate    oct(os.stat(r"${WS}/.changeledger").st_mode & 0o777)    modules=os
    Should Be Equal    ${mode}    0o700

Init Twice Keeps The Ledger
    Changeledger    init
    ${r}=    Changeledger    init
    Should Contain    ${r.stdout}    created: no

Db Current Reports Head In JSON From A Subdirectory
    Changeledger    init
    Create Directory    ${WS}/src/deep
    ${r}=    Run Process    ${CL}    db    current    --format    json    cwd=${WS}/src/deep
    ...    env:CHANGELEDGER_DB=
    Should Be Equal As Integers    ${r.rc}    0
    ${data}=    Evaluate    json.loads($r.stdout)    modules=json
    Should Be Equal    ${data}[command]    db current
    Should Be Equal    ${data}[status]    ok
    Should Be Equal    ${data}[data][revision]    ${data}[data][head]
    Should Be True    ${data}[data][up_to_date]

Db Check Passes At Head And Fails After Downgrade
    Changeledger    init
    Changeledger    db    check
    Changeledger    db    downgrade    base
    ${r}=    Changeledger    db    check    rc=1
    Should Contain    ${r.stderr}    run 'changeledger db upgrade'
    Changeledger    db    upgrade
    Changeledger    db    check

No Ledger Is Not Found With Exit 3
    ${r}=    Changeledger    db    current    rc=3
    Should Start With    ${r.stderr}    error: no ledger found
    Should Not Contain    ${r.stderr}    Traceback

Unsupported Database URL Is Invalid Input With Exit 2
    ${r}=    Changeledger    --db    mysql://user@host/db    db    current    rc=2
    Should Contain    ${r.stderr}    supports sqlite and postgresql

Error Envelope In JSON
    ${r}=    Changeledger    db    current    --format    json    rc=3
    ${data}=    Evaluate    json.loads($r.stdout)    modules=json
    Should Be Equal    ${data}[status]    error
    Should Be Equal As Integers    ${data}[exit_code]    3

Unknown Revision Is Not Found
    Changeledger    init
    ${r}=    Changeledger    db    downgrade    9999    rc=3
    Should Contain    ${r.stderr}    9999

Help And Version
    ${r}=    Changeledger    --help
    Should Contain    ${r.stdout}    init
    Should Contain    ${r.stdout}    --db
    ${r}=    Changeledger    --version
    Should Contain    ${r.stdout}    changeledger
