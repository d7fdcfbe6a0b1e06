"""A private Dovecot IMAP server for tests: temp dir, free loopback port, never the system one."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from imapclient import IMAPClient

DOVECOT = "/usr/sbin/dovecot"
USER = "desk"
PASSWORD = "secret"  # a throwaway test account

_CONF = """\
# Private test instance written by tests/dovecot.py; nothing here touches /etc/dovecot.
base_dir = {base}/run
state_dir = {base}/state
instance_name = maild-test-{port}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{base}/mail/%u
disable_plaintext_auth = no
auth_mechanisms = plain login
{ssl}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap {{
  process_limit = 64
}}
"""

_SSL_OFF = "ssl = no"
_SSL_ON = "ssl = yes\nssl_cert = <{base}/cert.pem\nssl_key = <{base}/key.pem"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _process_users() -> dict[str, str]:
    """As root, Dovecot refuses to run login processes as root: use its own system users."""
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    if os.getuid() != 0:
        return {"internal_user": me, "internal_group": group, "login_user": me}
    return {"internal_user": "dovecot", "internal_group": "dovecot", "login_user": "dovenull"}


def _mail_owner() -> tuple[int, int]:
    """Dovecot never accesses mail as uid 0: as root, mail belongs to `nobody`."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def make_self_signed(base: Path) -> None:
    """Write cert.pem/key.pem for CN=localhost with the openssl CLI."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(base / "key.pem"), "-out", str(base / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


class Dovecot:
    """One private Dovecot: `start()`, `stop()`, `restart()` keep the same ports and mail."""

    def __init__(self, base: Path, *, tls: bool = False, extra_conf: str = "") -> None:
        self.base = base
        self.tls = tls
        self.extra_conf = extra_conf
        self.port = free_port()
        self.ssl_port = free_port()
        self.host = "127.0.0.1"
        self.user = USER
        self.password = PASSWORD
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def conf(self) -> Path:
        return self.base / "dovecot.conf"

    @property
    def log_text(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> None:
        for sub in ("run", "state", "mail", "home"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.base.chmod(0o755)  # the unprivileged auth/login processes must read passwd
        uid, gid = _mail_owner()
        for sub in ("mail", "home"):
            os.chown(self.base / sub, uid, gid)
        ssl = _SSL_OFF
        if self.tls:
            make_self_signed(self.base)
            ssl = _SSL_ON.format(base=self.base)
        self.conf.write_text(
            _CONF.format(
                base=self.base, port=self.port, ssl_port=self.ssl_port, ssl=ssl,
                **_process_users(),
                uid=uid, gid=gid,
            )
            + self.extra_conf
        )  # fmt: skip

    def start(self, timeout: float = 15.0) -> None:
        """Start `dovecot -F` in the foreground and wait until the IMAP port answers."""
        if self._proc is not None:
            return
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "dovecot.stderr", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _port_answers(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self._diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not listen on {self.port}: {self._diagnostics()}")
            time.sleep(0.05)

    def _diagnostics(self) -> str:
        err = self.base / "dovecot.stderr"
        return (err.read_text(errors="replace") if err.exists() else "") + self.log_text[-2000:]

    def stop(self) -> None:
        """Terminate the whole process group (master and children) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _port_answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> IMAPClient:
        """A logged-in plaintext IMAPClient (the caller logs out)."""
        c = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        c.login(self.user, self.password)
        return c

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as c:
            if folder != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw)

    def append_many(self, raws: list[bytes], folder: str = "INBOX") -> None:
        """APPEND many messages over one connection (backlog tests)."""
        with self.client() as c:
            for raw in raws:
                c.append(folder, raw)

    def folder_uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as c:
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            return sorted(c.search("ALL"))

    def folder_flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            return {uid: tuple(flags) for uid, flags in c.get_flags(c.search("ALL")).items()}

    def recreate_folder(self, folder: str) -> None:
        """Delete and recreate `folder` (empty) so it gets a new UIDVALIDITY."""
        with self.client() as c:
            c.delete_folder(folder)
            c.create_folder(folder)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
