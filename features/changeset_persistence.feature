Feature: Changeset persistence
  Every file change an agent makes during a plan is recorded as a change entry, tied to the
  tool invocation that made it, and kept in the ledger database (SQLite or PostgreSQL). Diffs,
  status and the audit trail therefore survive a restart, and cancelling a plan or a failed
  apply cleans up what the plan no longer needs while the plan row keeps its final state.

  Background:
    Given an empty ledger
    And a plan "alpha" for workspace "/srv/alpha"

  Rule: The changeset store keeps what is started and recorded

    Scenario: A started changeset is stored before anything is recorded in it
      When changeset "c1" is started for plan "alpha"
      Then a freshly opened ledger on the same database finds changeset "c1" for plan "alpha"
      And in a freshly opened ledger changeset "c1" has 0 entries and 0 invocations
      And in a freshly opened ledger the current changeset of plan "alpha" is "c1"

    Scenario: Recorded changes read back in order with their real content
      Given changeset "c1" is started for plan "alpha"
      When these changes are recorded one by one in changeset "c1":
        | operation | path       | old_path  | before         | after       |
        | create    | hello.txt  |           |                | hi          |
        | modify    | src/app.py |           | print('hello') | print('hi') |
        | rename    | docs/b.md  | docs/a.md | same text      | same text   |
        | delete    | old.txt    |           | obsolete       |             |
      Then in a freshly opened ledger changeset "c1" has these entries:
        | seq | operation | path       | old_path  | before_size | after_size |
        | 1   | create    | hello.txt  |           |             | 2          |
        | 2   | modify    | src/app.py |           | 14          | 11         |
        | 3   | rename    | docs/b.md  | docs/a.md | 9           | 9          |
        | 4   | delete    | old.txt    |           | 8           |            |
      And in a freshly opened ledger every recorded entry's content reads back byte for byte

    Scenario: A batch continues the gapless sequence of single records
      Given changeset "c1" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c1":
        | operation | path  | old_path | before | after |
        | create    | a.txt |          |        | a     |
        | create    | b.txt |          |        | b     |
      When these changes are recorded as one batch in changeset "c1":
        | operation | path  | old_path | before | after |
        | create    | c.txt |          |        | c     |
        | modify    | a.txt |          | a      | a2    |
        | delete    | b.txt |          | b      |       |
      Then in a freshly opened ledger the entries of changeset "c1" have seq 1, 2, 3, 4, 5
      And in a freshly opened ledger the paths of changeset "c1" are a.txt, b.txt, c.txt, a.txt, b.txt

    Scenario: Paths are stored normalised relative to the workspace root
      Given changeset "c1" is started for plan "alpha"
      When these changes are recorded one by one in changeset "c1":
        | operation | path                 | old_path | before | after |
        | create    | src/./lib/../main.py |          |        | code  |
      Then in a freshly opened ledger the paths of changeset "c1" are src/main.py

    Scenario: Identical content is stored once however often it is recorded
      Given changeset "c1" is started for plan "alpha"
      When these changes are recorded one by one in changeset "c1":
        | operation | path  | old_path | before | after  |
        | create    | a.txt |          |        | shared |
        | create    | b.txt |          |        | shared |
        | create    | c.txt |          |        | unique |
      Then the ledger holds 2 blobs

    Scenario: Binary content is flagged and kept byte for byte
      Given changeset "c1" is started for plan "alpha"
      When a binary file "assets/logo.png" of 300 bytes is created in changeset "c1"
      Then in a freshly opened ledger the entry for "assets/logo.png" in changeset "c1" is binary
      And in a freshly opened ledger every recorded entry's content reads back byte for byte

    Scenario: A tool call is recorded together with the changes it made
      Given changeset "c1" is started for plan "alpha"
      When the tool "write_file" is called with arguments '{"path": "hello.txt", "content": "hi"}' and returns '{"bytes": 2}'
      And that call is recorded in changeset "c1" with these changes:
        | operation | path      | old_path | before | after |
        | create    | hello.txt |          |        | hi    |
      Then in a freshly opened ledger changeset "c1" has 1 entries and 1 invocations
      And in a freshly opened ledger invocation 1 of changeset "c1" is "write_file" with status "ok"
      And in a freshly opened ledger invocation 1 of changeset "c1" has arguments '{"path": "hello.txt", "content": "hi"}' and result '{"bytes": 2}'
      And in a freshly opened ledger invocation 1 of changeset "c1" lists the ids of the entries it made
      And in a freshly opened ledger the entry for "hello.txt" in changeset "c1" names invocation 1 and tool "write_file"

  Rule: get_for_plan finds the plan's current changeset

    Scenario: A plan that has not started a changeset has none
      Then plan "alpha" has no current changeset

    Scenario: The most recently started changeset is the plan's current one
      Given changeset "c1" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c1":
        | operation | path  | old_path | before | after |
        | create    | a.txt |          |        | a     |
        | create    | b.txt |          |        | b     |
      When changeset "c2" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c2":
        | operation | path  | old_path | before | after |
        | create    | c.txt |          |        | c     |
      Then in a freshly opened ledger the current changeset of plan "alpha" is "c2"
      And in a freshly opened ledger changeset "c2" has 1 entries and 0 invocations
      And in a freshly opened ledger changeset "c1" has 2 entries and 0 invocations

    Scenario: Asking for the changeset of an unknown plan names the plan
      When I call changesets.get_for_plan for an unknown plan
      Then it fails with NotFoundError saying "plan <unknown> not found"

  Rule: Summaries count a changeset without loading its content

    Scenario: The summary counts operations, files, bytes and tool errors
      Given changeset "c1" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c1":
        | operation | path          | old_path      | before   | after        |
        | create    | src/new.py    |               |          | print('new') |
        | modify    | README.md     |               | # App    | # App v2     |
        | modify    | README.md     |               | # App v2 | # App v3     |
        | delete    | legacy.txt    |               | legacy   |              |
        | rename    | docs/guide.md | docs/intro.md | guide    | guide        |
      And these tool calls are recorded in changeset "c1":
        | tool_name  | status | error                       |
        | read_file  | ok     |                             |
        | edit_file  | error  | ValueError: old text absent |
        | write_file | ok     |                             |
      When I summarize changeset "c1"
      Then the summary reads:
        | entries       | 5  |
        | files_changed | 4  |
        | creates       | 1  |
        | modifies      | 2  |
        | deletes       | 1  |
        | renames       | 1  |
        | tool_calls    | 3  |
        | tool_errors   | 1  |
        | bytes_before  | 24 |
        | bytes_after   | 33 |
      And the summary names changeset "c1" and plan "alpha"

    Scenario Outline: The summary counts each kind of change and each failed call
      Given changeset "c1" is started for plan "alpha"
      And changeset "c1" has <creates> creates, <modifies> modifies, <deletes> deletes and <renames> renames recorded
      And changeset "c1" has <ok> successful and <failed> failed tool calls recorded
      When I summarize changeset "c1"
      Then the summary reads:
        | entries       | <entries>  |
        | files_changed | <entries>  |
        | creates       | <creates>  |
        | modifies      | <modifies> |
        | deletes       | <deletes>  |
        | renames       | <renames>  |
        | tool_calls    | <calls>    |
        | tool_errors   | <failed>   |

      Examples:
        | creates | modifies | deletes | renames | ok | failed | entries | calls |
        | 0       | 0        | 0       | 0       | 0  | 0      | 0       | 0     |
        | 3       | 0        | 0       | 0       | 1  | 0      | 3       | 1     |
        | 1       | 2        | 3       | 4       | 2  | 3      | 10      | 5     |

  Rule: The entry repository saves, finds and deletes change entries

    Scenario: A saved entry reads back by changeset and by plan
      Given changeset "c1" is started for plan "alpha"
      When the entry repository saves an entry at seq 1 of changeset "c1" creating "notes.txt" with content "draft"
      Then the entry repository returns the saved entries for changeset "c1"
      And the entry repository returns the saved entries for plan "alpha"
      And the content "draft" reads back from the ledger
      And the next change recorded in changeset "c1" gets seq 2

    Scenario: An entry whose content is not in the ledger is refused
      Given changeset "c1" is started for plan "alpha"
      When the entry repository tries to save an entry at seq 1 of changeset "c1" creating "notes.txt" with content "draft" without passing the content
      Then it fails with MissingArtifactError saying "is not in the ledger; pass its content with the entry"
      And the entry repository returns no entries for changeset "c1"
      And the ledger holds 0 blobs

    Scenario: An entry that reuses a sequence number is refused
      Given changeset "c1" is started for plan "alpha"
      And the entry repository saves an entry at seq 1 of changeset "c1" creating "notes.txt" with content "draft"
      When the entry repository tries to save an entry at seq 1 of changeset "c1" creating "other.txt" with content "other"
      Then it fails with ValidationError on field "seq" saying "the same seq in its changeset, is already recorded"
      And the entry repository returns only the first saved entry for changeset "c1"

    Scenario: An entry that names the wrong plan for its changeset is refused
      Given a plan "beta" for workspace "/srv/beta"
      And changeset "c1" is started for plan "alpha"
      When the entry repository tries to save an entry at seq 1 of changeset "c1" claiming plan "beta"
      Then it fails with ValidationError on field "plan_id" saying "belongs to plan"
      And the entry repository returns no entries for plan "beta"

    Scenario: Deleting a changeset's entries keeps other changesets and shared content
      Given a plan "beta" for workspace "/srv/beta"
      And changeset "c1" is started for plan "alpha"
      And changeset "c2" is started for plan "beta"
      And these changes are recorded one by one in changeset "c1":
        | operation | path     | old_path | before | after      |
        | create    | keep.txt |          |        | shared     |
        | create    | only.txt |          |        | only in c1 |
      And these changes are recorded one by one in changeset "c2":
        | operation | path      | old_path | before | after  |
        | create    | other.txt |          |        | shared |
      When the entry repository deletes the entries of changeset "c1"
      Then 2 records were deleted
      And the entry repository returns no entries for changeset "c1"
      And in a freshly opened ledger changeset "c2" has 1 entries and 0 invocations
      And the content "shared" reads back from the ledger
      And reading the content "only in c1" fails with MissingArtifactError

    Scenario: Deleting a plan's entries removes those of all its changesets
      Given changeset "c1" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c1":
        | operation | path  | old_path | before | after |
        | create    | a.txt |          |        | a     |
      And changeset "c2" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c2":
        | operation | path  | old_path | before | after |
        | modify    | a.txt |          | a      | a2    |
        | delete    | b.txt |          | b      |       |
      When the entry repository deletes the entries of plan "alpha"
      Then 3 records were deleted
      And the entry repository returns no entries for plan "alpha"
      And the ledger holds 0 blobs

    Scenario: An entry for an unknown changeset is refused
      When the entry repository tries to save an entry at seq 1 of an unknown changeset of plan "alpha"
      Then it fails with NotFoundError saying "changeset <unknown> not found"
      And the entry repository returns no entries for plan "alpha"
      And the ledger holds 0 blobs

    Scenario Outline: An entry whose <field> is <problem> is refused
      Given changeset "c1" is started for plan "alpha"
      When the entry repository tries to save an entry of changeset "c1" whose <field> is <problem>
      Then it fails with <error> on field "<field>" saying "<message>"
      And the entry repository returns no entries for changeset "c1"

      Examples:
        | field       | problem        | error           | message                                      |
        | seq         | 0              | ValidationError | seq must be a positive integer               |
        | before_hash | not a digest   | ValidationError | before_hash: 'abc' is not a SHA-256 hex digest |
        | operation   | not an operation | ValidationError | 'explode' is not one of create, modify, delete, rename |
        | path        | outside the workspace | WorkspaceError | path '../escape.txt' is outside the workspace |
        | created_at  | a naive time   | ValidationError | created_at must be timezone-aware            |

    Scenario: The entry repository refuses entries for a cleaned-up changeset
      Given changeset "c1" is started for plan "alpha"
      And changeset "c1" has 1 creates, 0 modifies, 0 deletes and 0 renames recorded
      And the plan apply service has cleaned up the changeset of plan "alpha"
      When the entry repository tries to save an entry at seq 2 of changeset "c1" creating "late.txt" with content "late"
      Then it fails with MissingArtifactError saying "was cleaned up"
      And the message names changeset "c1" and plan "alpha"
      And the ledger holds no entries or invocations for plan "alpha"
      And the ledger holds 0 blobs

  Rule: The invocation repository saves, finds and deletes tool invocations

    Scenario: Saved invocations read back with their JSON fields, in seq order
      Given changeset "c1" is started for plan "alpha"
      When the invocation repository saves these invocations of changeset "c1":
        | seq | tool_name | status | arguments                       | result            | error                    |
        | 2   | edit_file | error  | {"path": "a.txt", "old": "x"}   | null              | ValueError: x not found |
        | 1   | read_file | ok     | {"path": "a.txt", "lines": [1]} | {"text": "hello"} |                          |
      Then the invocation repository returns the saved invocations for plan "alpha" in seq order
      And the invocation repository returns the saved invocations for changeset "c1" in seq order
      And the next tool call recorded in changeset "c1" gets seq 3

    Scenario: An invocation for an unknown changeset is refused
      When the invocation repository tries to save an invocation for an unknown changeset of plan "alpha"
      Then it fails with NotFoundError saying "changeset <unknown> not found"
      And the invocation repository returns no invocations for plan "alpha"

    Scenario Outline: An invocation whose <field> is <problem> is refused
      Given changeset "c1" is started for plan "alpha"
      When the invocation repository tries to save an invocation of changeset "c1" whose <field> is <problem>
      Then it fails with ValidationError on field "<field>" saying "<message>"
      And the invocation repository returns no invocations for plan "alpha"

      Examples:
        | field       | problem         | message                              |
        | seq         | 0               | seq must be a positive integer       |
        | tool_name   | blank           | tool_name must be a non-empty string |
        | status      | not a status    | 'bogus' is not one of ok, error      |
        | started_at  | a naive time    | started_at must be timezone-aware    |
        | finished_at | a naive time    | finished_at must be timezone-aware   |

    Scenario: The invocation repository refuses invocations for a cleaned-up changeset
      Given changeset "c1" is started for plan "alpha"
      And changeset "c1" has 1 successful and 0 failed tool calls recorded
      And the plan apply service has cleaned up the changeset of plan "alpha"
      When the invocation repository tries to save an invocation at seq 2 of changeset "c1"
      Then it fails with MissingArtifactError saying "was cleaned up"
      And the message names changeset "c1" and plan "alpha"
      And the ledger holds no entries or invocations for plan "alpha"

    Scenario: Deleting a plan's invocations leaves its entries and other plans alone
      Given a plan "beta" for workspace "/srv/beta"
      And changeset "c1" is started for plan "alpha"
      And changeset "c2" is started for plan "beta"
      And changeset "c1" has 1 creates, 0 modifies, 0 deletes and 0 renames recorded
      And changeset "c1" has 1 successful and 1 failed tool calls recorded
      And changeset "c2" has 1 successful and 0 failed tool calls recorded
      When the invocation repository deletes the invocations of plan "alpha"
      Then 2 records were deleted
      And the invocation repository returns no invocations for plan "alpha"
      And in a freshly opened ledger changeset "c1" has 1 entries and 0 invocations
      And in a freshly opened ledger changeset "c2" has 0 entries and 1 invocations

  Rule: Cleanup removes a finished plan's artifacts and keeps the plan row

    Scenario Outline: Cleanup after <outcome> returns its counts and keeps the plan's final state
      Given a plan "beta" for workspace "/srv/beta"
      And changeset "c1" is started for plan "alpha"
      And the tool "write_file" is called with arguments '{"path": "a.txt"}' and returns 'null'
      And that call is recorded in changeset "c1" with these changes:
        | operation | path  | old_path | before | after      |
        | create    | a.txt |          |        | alpha only |
        | modify    | b.txt |          | shared | alpha b    |
      And changeset "c2" is started for plan "beta"
      And these changes are recorded one by one in changeset "c2":
        | operation | path  | old_path | before | after |
        | create    | x.txt |          |        | shared |
      And plan "alpha" has moved through <states>
      When the plan apply service cleans up the changeset of plan "alpha"
      Then the cleanup removed:
        | changesets  | 1 |
        | entries     | 2 |
        | invocations | 1 |
        | blobs       | 2 |
      And in a freshly opened ledger plan "alpha" is in state "<final>" with current changeset "c1"
      And the ledger holds no entries or invocations for plan "alpha"
      And in a freshly opened ledger changeset "c2" has 1 entries and 0 invocations
      And the content "shared" reads back from the ledger

      Examples:
        | outcome      | states                                        | final        |
        | cancel       | cancelled                                     | cancelled    |
        | failed apply | executing, executed, applying, apply_failed   | apply_failed |

    Scenario: Cleaning up twice removes nothing the second time
      Given changeset "c1" is started for plan "alpha"
      And changeset "c1" has 2 creates, 1 modifies, 0 deletes and 0 renames recorded
      And the plan apply service has cleaned up the changeset of plan "alpha"
      When the plan apply service cleans up the changeset of plan "alpha"
      Then the cleanup removed:
        | changesets  | 0 |
        | entries     | 0 |
        | invocations | 0 |
        | blobs       | 0 |

    Scenario: Cleaning up a plan that does not exist names the plan
      When the plan apply service tries to clean up an unknown plan
      Then it fails with NotFoundError saying "plan <unknown> not found"

  Rule: Arguments are checked before the database is touched

    Scenario Outline: A <repository> refuses <factory> as its session factory
      When I build a <repository> with <factory>
      Then it fails with ValidationError on field "session_factory" saying "<message>"

      Examples:
        | repository               | factory      | message                                                        |
        | ChangeSetEntryRepository | nothing      | session_factory is required                                    |
        | ToolInvocationRepository | nothing      | session_factory is required                                    |
        | SqlChangeSetStore        | nothing      | session_factory is required                                    |
        | SqlPlanStore             | nothing      | session_factory is required                                    |
        | ChangeSetEntryRepository | the engine   | session_factory must be a sqlalchemy.orm.sessionmaker, not Engine |
        | ToolInvocationRepository | a URL string | session_factory must be a sqlalchemy.orm.sessionmaker, not str    |

    Scenario Outline: <method> refuses the id "<value>"
      When I call <method> with "<value>"
      Then it fails with ValidationError on field "<field>" saying "<message>"
      And nothing was written to the ledger

      Examples:
        | method                                  | value                       | field        | message                                       |
        | changesets.start                        |                             | plan_id      | plan_id must not be empty                     |
        | changesets.start                        | plan-42                     | plan_id      | plan_id 'plan-42' is not a valid id           |
        | changesets.get_for_plan                 |                             | plan_id      | plan_id must not be empty                     |
        | changesets.delete_for_plan              | plan-42                     | plan_id      | expected a 26-character ULID                  |
        | changesets.get                          |                             | changeset_id | changeset_id must not be empty                |
        | changesets.get                          | 01ARZ3NDEKTSV4RRFFQ69G5FAVX | changeset_id | is not a valid id                             |
        | changesets.record                       |                             | changeset_id | changeset_id must not be empty                |
        | changesets.record_invocation            | cs-1                        | changeset_id | changeset_id 'cs-1' is not a valid id         |
        | changesets.summarize                    |                             | changeset_id | changeset_id must not be empty                |
        | entries.get_entries_for_changeset       |                             | changeset_id | changeset_id must not be empty                |
        | entries.get_entries_for_plan            |                             | plan_id      | plan_id must not be empty                     |
        | entries.delete_for_changeset            | cs-1                        | changeset_id | is not a valid id                             |
        | entries.delete_for_plan                 |                             | plan_id      | plan_id must not be empty                     |
        | invocations.get_invocations_for_plan    |                             | plan_id      | plan_id must not be empty                     |
        | invocations.get_invocations_for_changeset |                           | changeset_id | changeset_id must not be empty                |
        | invocations.delete_for_plan             | plan-42                     | plan_id      | is not a valid id                             |
        | plan_apply.cleanup_changeset            |                             | plan_id      | plan_id must not be empty                     |
        | plan_apply.cleanup_changeset            | plan-42                     | plan_id      | plan_id 'plan-42' is not a valid id           |

    Scenario Outline: A change to "<path>" is refused because it leaves the workspace
      Given changeset "c1" is started for plan "alpha"
      When I try to record a create of "<path>" in changeset "c1"
      Then it fails with WorkspaceError on field "path" saying "<message>"
      And in a freshly opened ledger changeset "c1" has 0 entries and 0 invocations
      And the next change recorded in changeset "c1" gets seq 1

      Examples:
        | path                    | message                                    |
        |                         | path must not be empty                     |
        | ../outside.txt          | path '../outside.txt' is outside the workspace |
        | src/../../etc/passwd    | is outside the workspace                   |
        | /etc/passwd             | is absolute                                |
        | C:/Windows/win.ini      | is absolute                                |
        | dir\\file.txt           | contains a backslash                       |
        | .git/config             | inside .git/                               |
        | .changeledger/ledger.db | inside .changeledger/                      |

    Scenario: A rename from outside the workspace is refused on its old path
      Given changeset "c1" is started for plan "alpha"
      When I try to record a rename of "../secrets.env" to "config.env" in changeset "c1"
      Then it fails with WorkspaceError on field "old_path" saying "old_path '../secrets.env' is outside the workspace"
      And in a freshly opened ledger changeset "c1" has 0 entries and 0 invocations

  Rule: Content that is gone is reported as missing, by name

    Scenario Outline: A cleaned-up changeset is reported as missing by <method>
      Given changeset "c1" is started for plan "alpha"
      And changeset "c1" has 1 creates, 1 modifies, 0 deletes and 0 renames recorded
      And the plan apply service has cleaned up the changeset of plan "alpha"
      When I call <method> on the cleaned-up changeset "c1"
      Then it fails with MissingArtifactError saying "was cleaned up"
      And the message names changeset "c1" and plan "alpha"
      And the ledger holds no entries or invocations for plan "alpha"

      Examples:
        | method                       |
        | changesets.get               |
        | changesets.get_for_plan      |
        | changesets.summarize         |
        | changesets.record            |
        | changesets.record_invocation |

    Scenario Outline: An unknown changeset is not found rather than missing, for <method>
      When I call <method> on an unknown changeset
      Then it fails with NotFoundError saying "changeset <unknown> not found"

      Examples:
        | method                       |
        | changesets.get               |
        | changesets.summarize         |
        | changesets.record            |
        | changesets.record_invocation |

    Scenario: Content whose blob is gone from the database is reported as missing
      Given changeset "c1" is started for plan "alpha"
      And these changes are recorded one by one in changeset "c1":
        | operation | path      | old_path | before | after     |
        | create    | lost.txt  |          |        | lost text |
        | create    | kept.txt  |          |        | kept text |
      When the blob of "lost text" is deleted behind the ledger's back
      Then reading the content "lost text" fails with MissingArtifactError
      And the message names the digest of "lost text"
      And the content "kept text" reads back from the ledger
      And in a freshly opened ledger changeset "c1" has 2 entries and 0 invocations

    Scenario: Content that was never stored is reported as missing
      When I read the content "never recorded" from the ledger
      Then it fails with MissingArtifactError saying "is missing from the ledger"
      And the message names the digest of "never recorded"

    Scenario: A malformed digest is refused
      When I read the blob "not-a-digest" from the ledger
      Then it fails with ValidationError on field "digest" saying "is not a SHA-256 hex digest"
