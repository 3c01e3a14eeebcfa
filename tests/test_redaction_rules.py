"""The redactor's rules on their own: private-key bodies without their BEGIN line, patch
headers in every format, secrets inside command lines, and the token formats of common
services (issue 9, item 11). The stores and the command line are in test_redaction.py."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from changeledger.domain.redact import MASK, Redactor, patch_paths

REDACTOR = Redactor()
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("ssh-keygen") is None,
    reason="generating real keys needs openssl and ssh-keygen",
)


# -- private keys without their BEGIN line ---------------------------------------------------

#: name -> the commands that write it (``{out}``: the file), run in a scratch directory.
GENPKEY = "openssl genpkey -algorithm"
KEY_COMMANDS = {
    "rsa-pkcs8": [f"{GENPKEY} RSA -out {{out}}"],
    "rsa-pkcs1": [
        f"{GENPKEY} RSA -out tmp.pem",
        "openssl rsa -in tmp.pem -traditional -out {out}",
    ],
    "rsa-4096-pkcs1": [
        f"{GENPKEY} RSA -pkeyopt rsa_keygen_bits:4096 -out tmp4096.pem",
        "openssl rsa -in tmp4096.pem -traditional -out {out}",
    ],
    "ec-p256-pkcs8": [f"{GENPKEY} EC -pkeyopt ec_paramgen_curve:P-256 -out {{out}}"],
    "ec-p256-sec1": [
        f"{GENPKEY} EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem",
        "openssl ec -in ec.pem -out {out}",
    ],
    "ec-p384-sec1": [
        f"{GENPKEY} EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.pem",
        "openssl ec -in ec384.pem -out {out}",
    ],
    "ed25519-pkcs8": [f"{GENPKEY} ED25519 -out {{out}}"],
    "openssh-ed25519": ["ssh-keygen -q -t ed25519 -N '' -f {out}"],
    "openssh-rsa": ["ssh-keygen -q -t rsa -b 2048 -N '' -f {out}"],
}
PUBLIC_COMMANDS = {
    "certificate": [
        f"{GENPKEY} RSA -out ca.pem",
        "openssl req -x509 -key ca.pem -subj /CN=x -days 1 -out {out}",
    ],
    "rsa-public-key": [f"{GENPKEY} RSA -out pk.pem", "openssl pkey -in pk.pem -pubout -out {out}"],
    "ec-public-key": [
        f"{GENPKEY} EC -pkeyopt ec_paramgen_curve:P-256 -out epk.pem",
        "openssl pkey -in epk.pem -pubout -out {out}",
    ],
}


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every key and public file above, generated once, as PEM text."""
    if shutil.which("openssl") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("generating real keys needs openssl and ssh-keygen")
    scratch = tmp_path_factory.mktemp("keys")
    found = {}
    for name, commands in {**KEY_COMMANDS, **PUBLIC_COMMANDS}.items():
        for command in commands:
            argv = shlex.split(command.replace("{out}", name))
            subprocess.run(argv, cwd=scratch, check=True, capture_output=True)
        found[name] = (scratch / name).read_text()
    return found


def _lines(pem: str) -> list[str]:
    return pem.strip().splitlines()


def _body(pem: str) -> str:
    """The base64 lines of a PEM file, without its BEGIN and END lines."""
    return "\n".join(_lines(pem)[1:-1])


def _secret_pieces(pem: str) -> list[str]:
    """Pieces of a key body that must not be left: every body line of 16 characters or
    more (a line is 64 or 70; the last one may be short)."""
    return [line for line in _lines(pem)[1:-1] if len(line) >= 16]


def _assert_masked(redacted: str, pem: str) -> None:
    assert "[REDACTED:private-key]" in redacted
    for piece in _secret_pieces(pem):
        assert piece not in redacted


@needs_openssl
@pytest.mark.parametrize("name", sorted(KEY_COMMANDS))
def test_a_key_body_with_its_end_line_but_no_begin_is_masked(
    pem_files: dict[str, str], name: str
) -> None:
    """The tail of an output that starts inside a key: its body and END line."""
    pem = pem_files[name]
    lines = _lines(pem)
    for cut in (1, len(lines) // 2):  # without BEGIN; from the middle of the body
        tail = "\n".join(lines[cut:])
        for text in (
            f"{tail}\nDone.\n",
            f"...{tail[7:]}\r\n",  # cut inside a line, CRLF
            json.dumps({"output": tail + "\n"}),  # escaped line ends
        ):
            redacted = REDACTOR.text(text)
            _assert_masked(redacted, "\n".join(lines[cut - 1 :]) if cut > 1 else pem)
    # What surrounds it stays readable.
    assert REDACTOR.text(f"{chr(10).join(lines[1:])}\nDone.\n").endswith("\nDone.\n")


@needs_openssl
@pytest.mark.parametrize("name", sorted(KEY_COMMANDS))
def test_a_key_body_alone_is_recognised_by_how_it_starts(
    pem_files: dict[str, str], name: str
) -> None:
    """Neither BEGIN nor END: the DER (PKCS#1, PKCS#8, SEC1) or OpenSSH start says it."""
    pem = pem_files[name]
    body = _body(pem)
    one_line = "".join(body.split())
    cases = {
        "wrapped lines": f"key:\n{body}\nnext line\n",
        "an assignment": f"SSH_KEY={one_line} ./deploy.sh",
        "a JSON string": json.dumps({"signing": one_line}),
        "escaped lines": json.dumps({"signing": body + "\n"}),
    }
    for case, text in cases.items():
        redacted = REDACTOR.text(text)
        assert "[REDACTED:private-key]" in redacted, case
        for piece in _secret_pieces(pem):
            assert piece not in redacted, case
        assert one_line[40:80] not in redacted, case
    assert REDACTOR.text(cases["wrapped lines"]).endswith("\nnext line\n")
    assert REDACTOR.text(cases["an assignment"]).endswith(" ./deploy.sh")


@needs_openssl
@pytest.mark.parametrize("name", sorted(PUBLIC_COMMANDS))
def test_certificates_and_public_keys_stay_readable(pem_files: dict[str, str], name: str) -> None:
    pem = pem_files[name]
    for text in (pem, _body(pem), "".join(_body(pem).split()), "\n".join(_lines(pem)[1:])):
        assert REDACTOR.text(text) == text


def test_an_end_line_alone_or_after_prose_masks_nothing_else() -> None:
    for prose in (
        "a PEM key ends with\n-----END RSA PRIVATE KEY-----\nand nothing more",
        "it ends with -----END RSA PRIVATE KEY----- as its last line",
        "-----END PRIVATE KEY-----",
    ):
        assert REDACTOR.text(prose) == prose
    for text in ("MIIEvQ", "id MIIE then", "b3BlbnNzaC1rZXktdjE"):  # too short for a key
        assert REDACTOR.text(text) == text


def test_putty_private_lines_are_masked() -> None:
    ppk = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"
        "Public-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIG\nxyz\n"
        "Private-Lines: 1\nAAAAIHF2bmVyeXNlY3JldHBhcnRvZnRoZWtleQ==\n"
        "Private-MAC: 0123\n"
    )
    redacted = REDACTOR.text(ppk)
    assert "AAAAIHF2bmVyeXNlY3JldHBhcnRvZnRoZWtleQ" not in redacted
    assert "Public-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIG" in redacted
    assert REDACTOR.is_sensitive_file("keys/deploy.ppk")


# -- patch headers in every format ----------------------------------------------------------

HUNK = "@@ -1 +1 @@\n-hunter2-old\n+hunter2-new\n"


@pytest.mark.parametrize(
    "header",
    [
        "--- .env\t2024-01-01 10:00:00.000000000 +0000\n"
        "+++ .env\t2024-01-02 10:00:00.000000000 +0000\n",
        "--- a/.env\n+++ b/.env\n",
        "diff --git a/.env b/.env\nindex 1..2 100644\n--- a/.env\n+++ b/.env\n",
        "diff --git a/config.txt b/.env\nsimilarity index 90%\n"
        "rename from config.txt\nrename to .env\n",
        "diff --git a/.env b/.env.bak\ncopy from .env\ncopy to .env.bak\n",
        'diff --git "a/.env" "b/.env"\n--- "a/.env"\n+++ "b/.env"\n',
        "--- a/.env\r\n+++ b/.env\r\n",
        "Index: .env\n===================================================================\n"
        "--- .env\t(revision 1)\n+++ .env\t(working copy)\n",
        "*** .env\t2024-01-01 10:00:00\n--- .env\t2024-01-02 10:00:00\n***************\n",
        "diff -u old/.env new/.env\n--- old/.env\n+++ new/.env\n",
        "--- /dev/null\n+++ b/deploy/id_ed25519\n",
        "--- a/secrets/prod.txt\n+++ b/secrets/prod.txt\n",
        'diff --git "a/caf\\303\\251/.env" "b/caf\\303\\251/.env"\n',
        "Binary files a/keystore.jks and b/keystore.jks differ\n",
    ],
)
def test_patches_to_sensitive_files_are_masked_whatever_the_header(header: str) -> None:
    redactor = Redactor(sensitive_files=("secrets/*",))
    patch = header + HUNK
    arguments, result = redactor.call({"patch": patch}, {"files": [{"path": "x"}]})
    assert arguments == {"patch": f"{MASK} ({len(patch)} characters of a sensitive file)"}
    assert "hunter2" not in json.dumps(result)


def test_patch_header_paths_are_every_path_like_word() -> None:
    assert ".env" in patch_paths("--- .env\t2024-01-01 10:00:00.000000000 +0000\n")
    assert "café/.env" in patch_paths('diff --git "a/caf\\303\\251/.env" b/x\n')
    assert patch_paths("rename to x/.npmrc\r\n") == ["x/.npmrc"]
    assert patch_paths("no header here\n--no\n") == []
    plain = {"patch": "--- a/README.md\t2024-01-01\n+++ b/README.md\n" + HUNK}
    assert REDACTOR.call(plain, None)[0] == plain


# -- secrets inside command lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("mysql --password=s3cr3t db", f"mysql --password={MASK} db"),
        ("mysql --password s3cr3t db", f"mysql --password {MASK} db"),
        ("mysql -u root -ps3cr3t db", f"mysql -u root -p{MASK} db"),
        ("mysqldump -ps3cr3t db > x.sql", f"mysqldump -p{MASK} db > x.sql"),
        ("mysql -p db", "mysql -p db"),  # asks for the password: db is the database
        ("curl -u user:s3cr3t https://x", f"curl -u user:{MASK} https://x"),
        ("curl --user user:s3cr3t https://x", f"curl --user user:{MASK} https://x"),
        ("curl --user=user:s3cr3t https://x", f"curl --user=user:{MASK} https://x"),
        ("curl -uuser:s3cr3t https://x", f"curl -uuser:{MASK} https://x"),
        ("curl -u 'user:s3 cr3t' https://x", f"curl -u 'user:{MASK}' https://x"),
        ('curl -H "X-Api-Key: s3cr3t" https://x', f'curl -H "X-Api-Key: {MASK}" https://x'),
        ("curl -H 'Authorization: Bearer s3cr3t' x", f"curl -H 'Authorization: {MASK}' x"),
        ("curl --header X-Auth-Token:s3cr3t x", f"curl --header X-Auth-Token:{MASK} x"),
        ("API_KEY=s3cr3t ./run.sh --fast", f"API_KEY={MASK} ./run.sh --fast"),
        ("FOO=1 API_TOKEN=s3cr3t make", f"FOO=1 API_TOKEN={MASK} make"),
        ("export TOKEN=s3cr3t; make", f"export TOKEN={MASK}; make"),
        ('DB_PASSWORD="s3 cr3t" psql', f'DB_PASSWORD="{MASK}" psql'),
        ("TOKEN=$GITHUB_TOKEN make", "TOKEN=$GITHUB_TOKEN make"),  # a variable, not a secret
        ("env GITHUB_TOKEN=s3cr3t gh pr list", f"env GITHUB_TOKEN={MASK} gh pr list"),
        ("docker run -e API_TOKEN=s3cr3t img", f"docker run -e API_TOKEN={MASK} img"),
        ("sshpass -p s3cr3t ssh host", f"sshpass -p {MASK} ssh host"),
        ("docker login -u me -p s3cr3t reg", f"docker login -u me -p {MASK} reg"),
        ("redis-cli -a s3cr3t ping", f"redis-cli -a {MASK} ping"),
        ("keytool -list -storepass s3cr3t", f"keytool -list -storepass {MASK}"),
        ("wget --http-password=s3cr3t x", f"wget --http-password={MASK} x"),
        ("sh -c 'mysql --password=s3cr3t db'", f"sh -c 'mysql --password={MASK} db'"),
        ("cd app && mysql -ps3cr3t; ls -p", f"cd app && mysql -p{MASK}; ls -p"),
        # Short options of other programs keep their values.
        ("docker run -p 8080:80 -u 1000:1000 img", "docker run -p 8080:80 -u 1000:1000 img"),
        ("mkdir -p build && sudo -u www curl x", "mkdir -p build && sudo -u www curl x"),
        ("git commit -m 'token counts' -a", "git commit -m 'token counts' -a"),
        # A YAML line in a here-document is masked to its end, as in a file.
        ("cat > c.yml <<EOF\npassword: a b c\nEOF", f"cat > c.yml <<EOF\npassword: {MASK}\nEOF"),
    ],
)
def test_secrets_in_command_lines_are_masked_and_the_rest_kept(command: str, expected: str) -> None:
    assert REDACTOR.command(command) == expected
    assert REDACTOR.value({"command": command}) == {"command": expected}
    assert REDACTOR.value({"argv": ["sh", "-c", command]}) == {"argv": ["sh", "-c", expected]}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mysql", "--password", "s3cr3t", "db"], ["mysql", "--password", MASK, "db"]),
        (["mysql", "-ps3cr3t", "db"], ["mysql", f"-p{MASK}", "db"]),
        (["curl", "-u", "user:s3cr3t", "url"], ["curl", "-u", f"user:{MASK}", "url"]),
        (["curl", "-H", "X-Api-Key: s3cr3t", "url"], ["curl", "-H", f"X-Api-Key: {MASK}", "url"]),
        (["env", "FOO=1", "API_TOKEN=s3cr3t", "x"], ["env", "FOO=1", f"API_TOKEN={MASK}", "x"]),
        (["sshpass", "-p", "s3cr3t", "ssh", "h"], ["sshpass", "-p", MASK, "ssh", "h"]),
        (["tool", "--api-key", "s3 cr3t"], ["tool", "--api-key", MASK]),
        (["mysql", "--password", "--verbose"], ["mysql", "--password", "--verbose"]),
        (["sudo", "-u", "root", "id"], ["sudo", "-u", "root", "id"]),
    ],
)
def test_an_option_and_its_value_may_be_separate_argv_elements(
    argv: list[str], expected: list[str]
) -> None:
    assert REDACTOR.argv(argv) == expected
    assert REDACTOR.value({"argv": argv}) == {"argv": expected}
    assert REDACTOR.value({"result": {"argv": argv}}) == {"result": {"argv": expected}}


def test_text_that_is_not_a_command_keeps_lines_masked_to_their_end() -> None:
    dotenv = "API_TOKEN=s3cr3t make\nexport DB_PASSWORD=a b\npassword: x y\nFOO=1 TOKEN=z w\n"
    assert REDACTOR.text(dotenv) == (
        f"API_TOKEN={MASK}\nexport DB_PASSWORD={MASK}\npassword: {MASK}\nFOO=1 TOKEN={MASK} w\n"
    )
    assert REDACTOR.text("a\r\nDB_PASSWORD=x\r\nb") == f"a\r\nDB_PASSWORD={MASK}\r\nb"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "patch line 5: unexpected line in hunk: 'API_KEY=s3cr3t'",
            f"patch line 5: unexpected line in hunk: 'API_KEY={MASK}'",
        ),
        ("invalid token: s3cr3t (expired)", f"invalid token: {MASK} (expired)"),
        ('sent {"password": "s3cr3t", "id": 1}', f'sent {{"password": "{MASK}", "id": 1}}'),
        ("GET /x?access_token=s3cr3t&page=2", f"GET /x?access_token={MASK}&page=2"),
        ("refused: Authorization: Bearer s3cr3t", f"refused: Authorization: {MASK}"),
        ("ran: mysql --password=s3cr3t db", f"ran: mysql --password={MASK} db"),
        ("max_tokens: 100, token_count=5", "max_tokens: 100, token_count=5"),
        ("if token == expected: return", "if token == expected: return"),
    ],
)
def test_assignments_inside_a_line_are_masked(message: str, expected: str) -> None:
    assert REDACTOR.text(message) == expected


def test_users_names_are_found_inside_lines_too() -> None:
    redactor = Redactor(keys=("session_ref", "otp"))
    assert redactor.text("failed for SESSION_REF=abc, otp: 123456 (x)") == (
        f"failed for SESSION_REF={MASK}, otp: {MASK} (x)"
    )
    assert redactor.text("sessionref: x\n") == f"sessionref: {MASK}\n"


# -- token formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "kind"),
    [
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
            + "a" * 86
            + "==;EndpointSuffix=core.windows.net",
            "a" * 86,
            "azure-storage-key",
        ),
        ("Endpoint=sb://x/;SharedAccessKey=" + "b" * 43 + "=", "b" * 43, "azure-storage-key"),
        ("https://x.blob.core.windows.net/c?sv=2022&sig=" + "c" * 40, "c" * 40, "azure-sas"),
        ("twilio SK" + "0123456789abcdef" * 2, "SK" + "0123456789abcdef" * 2, "twilio-api-key"),
        ("mc " + "0123456789abcdef" * 2 + "-us21", "0123456789abcdef" * 2, "mailchimp-key"),
        ("npm npm_" + "A1b2" * 9, "npm_" + "A1b2" * 9, "npm-token"),
        (
            "SG." + "a" * 22 + "." + "b" * 43,
            "SG." + "a" * 22 + "." + "b" * 43,
            "sendgrid-key",
        ),
        ("sq0atp-" + "x" * 22, "sq0atp-" + "x" * 22, "square-token"),
        ("sq0csp-" + "y" * 43, "sq0csp-" + "y" * 43, "square-token"),
        (
            "bot MTA1" + "a" * 22 + ".Gh1x2y.abcdefghijklmnopqrstuvwxyz0",
            "MTA1" + "a" * 22 + ".Gh1x2y.abcdefghijklmnopqrstuvwxyz0",
            "discord-token",
        ),
        (
            "https://discord.com/api/webhooks/123/" + "w" * 60,
            "w" * 60,
            "discord-webhook",
        ),
        ("sk-proj-" + "p" * 48, "sk-proj-" + "p" * 48, "api-key"),
        ("sk-ant-api03-" + "q" * 90, "sk-ant-api03-" + "q" * 90, "api-key"),
        ("https://hooks.slack.com/services/T0/B0/" + "z" * 24, "z" * 24, "slack-webhook"),
        ("glrt-" + "r" * 20, "glrt-" + "r" * 20, "gitlab-token"),
        ("pypi-AgEIcHlwaS5vcmc" + "t" * 60, "pypi-AgEIcHlwaS5vcmc" + "t" * 60, "pypi-token"),
        ("bot 123456789:" + "A" * 35, "A" * 35, "telegram-bot-token"),
        ("hf_" + "h" * 34, "hf_" + "h" * 34, "huggingface-token"),
        ("GOCSPX-" + "g" * 28, "GOCSPX-" + "g" * 28, "google-oauth"),
        ("ya29." + "g" * 40, "ya29." + "g" * 40, "google-oauth"),
        ("dop_v1_" + "f" * 64, "dop_v1_" + "f" * 64, "digitalocean-token"),
        ("shpat_" + "a" * 32, "shpat_" + "a" * 32, "shopify-token"),
        ("dapi" + "0" * 32, "dapi" + "0" * 32, "databricks-token"),
        ("whsec_" + "w" * 32, "whsec_" + "w" * 32, "stripe-webhook-secret"),
        ("rk_live_" + "r" * 24, "rk_live_" + "r" * 24, "stripe-key"),
        ("AKCp" + "a" * 69, "AKCp" + "a" * 69, "artifactory-key"),
        ("A3TX" + "ABCDEFGHIJKLMNOP", "A3TXABCDEFGHIJKLMNOP", "aws-access-key-id"),
        ("sent BEARER " + "T" * 20, "T" * 20, "bearer-token"),
    ],
)
def test_more_service_token_formats_are_masked(text: str, secret: str, kind: str) -> None:
    redacted = REDACTOR.text(text)
    assert secret not in redacted
    assert f"[REDACTED:{kind}]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "SKIPPED" + "a" * 32,  # not hex
        "xnpm_" + "a" * 36,  # inside a word
        "mydapi" + "0" * 32,
        "AKCL",
        "a.b.c: 12345678:short",
        "import hf_hub_download",
    ],
)
def test_look_alikes_are_kept(text: str) -> None:
    assert REDACTOR.text(text) == text
