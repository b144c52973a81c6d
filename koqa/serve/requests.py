"""A request to `koqa serve`: its body read within the limits, checked field by field, and the
answer located in its context. Anything wrong is a RequestError: the HTTP status and one line
naming the field."""

import hmac
import json

from koqa.data_tools.records import QARecord
from koqa.data_tools.validation import text_problem
from koqa.serve.config import ServeConfig

REQUEST_FIELDS = ("context", "question", "id")


class RequestError(Exception):
    """A bad request: the HTTP status, and one line naming the field."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def body(self) -> dict:
        return {"error": self.message, "field": self.field}


def read_questions(body: bytes, config: ServeConfig, first_id: int) -> tuple[list[QARecord], list, bool]:
    """The records of a request body, the ids the client gave (None where it gave none) and whether it
    asked in batch form; a RequestError naming the field for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not UTF-8 (byte {exc.start})", "body") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise RequestError(400, f"the body is not JSON: {message}", "body") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body is a JSON {type(data).__name__}, not an object", "body")
    batch = "questions" in data
    if batch:
        extra = sorted(set(data) - {"questions"})
        if extra:
            raise RequestError(422, f"unknown field '{extra[0]}' beside 'questions'", extra[0])
        items = data["questions"]
        if not isinstance(items, list) or not items:
            raise RequestError(422, "must be a non-empty list of {context, question} objects", "questions")
        if len(items) > config.max_questions:
            raise RequestError(
                413, f"{len(items)} questions in one request; max_questions is {config.max_questions}", "questions"
            )
    else:
        items = [data]
    records, ids = [], []
    for i, item in enumerate(items):
        where = f"questions[{i}]." if batch else ""
        if not isinstance(item, dict):
            raise RequestError(422, f"is a JSON {type(item).__name__}, not an object", f"questions[{i}]")
        extra = sorted(set(item) - set(REQUEST_FIELDS))
        if extra:
            raise RequestError(422, f"unknown field (known: {', '.join(REQUEST_FIELDS)})", where + extra[0])
        for name, limit in (("context", config.max_context_chars), ("question", config.max_question_chars)):
            problem = text_problem(item.get(name))
            if problem:
                raise RequestError(422, problem, where + name)
            if len(item[name]) > limit:
                raise RequestError(413, f"is {len(item[name])} characters; the limit is {limit}", where + name)
        given = item.get("id")
        if given is not None and not isinstance(given, (str, int)):
            raise RequestError(422, "must be a string or an integer", where + "id")
        ids.append(given)
        records.append(QARecord(id=f"q{first_id + i}", context=item["context"], question=item["question"].strip()))
    return records, ids, batch


def locate(answer: str, context: str) -> dict:
    """An answer with its place in the context: the first occurrence, as character offsets."""
    start = context.find(answer) if answer else -1
    return {
        "answer": answer,
        "start": start if start >= 0 else None,
        "end": start + len(answer) if start >= 0 else None,
        "in_passage": start >= 0,
        "no_answer": not answer,
    }


def authorised(request, token: str | None) -> bool:
    """Whether `request` carries the bearer token (compared in constant time); always, without one."""
    if token is None:
        return True
    given = request.headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())


async def read_body(request, limit: int) -> bytes:
    """The request's body, refused as soon as it is known to be over `limit` bytes (declared or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(413, f"the body is over max_body_bytes ({limit})", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over max_body_bytes ({limit})", "body")
        chunks.append(chunk)
    return b"".join(chunks)
