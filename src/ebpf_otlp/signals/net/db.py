"""What the database protocols' parsers (postgres.py, mysql.py, redis.py) share: the record
of a statement run, and the bookkeeping of statements sent and answered, in order."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

KEEP = 1024                  # DB_KEEP: bytes the kernel keeps of a client's message (statements)


@dataclass(slots=True)
class Statement:
    """One statement run, as a wire-protocol parser saw it: its text as sent (up to KEEP
    bytes of it), and how it ended."""
    text: str
    start_ns: int
    tid: int = 0
    end_ns: int = 0
    status: str = ""             # the server's error code (PostgreSQL's SQLSTATE, MySQL's number)
    error: str = ""              # and its message ("" when none came)
    rows: int | None = None      # returned or affected, as the server counted them
    truncated: bool = False      # the text went past the bytes kept
    prepared: str = ""           # the prepared statement it ran, by name or id
    ended_by: str = ""           # "framing", "close", "capture end"


class StatementParser:
    """One connection's statements: sent and not yet answered (answers come in order), done,
    and lost (an answer the kernel's walk, or the framing, lost its place in). Subclasses
    feed() their protocol's calls and say which of their commands are statements."""

    system = ""

    def __init__(self) -> None:
        self.requests_dir: int | None = None   # the client's direction (1: we are the server)
        self.database = self.user = ""
        self.sent: deque[Statement] = deque()
        self.done: list[Statement] = []
        self.lost = 0                          # statements not reported: their answers were lost
        self.unparsed = 0                      # messages that made no sense: that side stopped

    @staticmethod
    def reported(q: Statement) -> bool:
        """A statement the user sees (MySQL's prepares and pings are not)."""
        return True

    def lose_answers(self) -> None:
        self.lost += sum(map(self.reported, self.sent))
        self.sent.clear()

    def resume_server(self) -> None:
        """The kernel began the server's side (`sides`) again at a message boundary,
        having lost its place (user space may not have known: a call dropped from a full
        ring): what it was answering is lost."""
        side = self.sides[1 - self.requests_dir]
        side.lost = False
        side.data.clear()
        self.lose_answers()

    def close(self, how: str) -> None:
        """Statements without an answer are reported at the close, without one."""
        while self.sent:
            q = self.sent.popleft()
            if self.reported(q):
                q.ended_by = how
                self.done.append(q)

    def take(self) -> list[Statement]:
        done, self.done = self.done, []
        return done
