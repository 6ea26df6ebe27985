"""VLM-judge reward: a vision-language model behind an OpenAI-compatible endpoint checks the image.

The judge is asked the checklist the ShapeWorld verifier checks (objects with counts, colours,
sizes, relations, GenEval++'s regions and relative sizes, from the prompt record) and answers JSON:
    {"facts": [{"fact": "...", "holds": true}, ...], "aligned": true}
strict = 1 iff every asked fact holds; partial = fraction of asked facts that hold. The facts
decide; "aligned" is requested (it makes the model commit) but not trusted over them.

A record with "questions" and "answers" (a TIIF item, r3.world.tiif_io.prompt_records) is asked its own yes/no
questions instead and answers {"answers": ["yes", "no", ...]}; strict = 1 iff every answer is the expected one,
partial = the share that are (TIIF's score).

Failure policy:
  * endpoint down, timing out, or answering 5xx / 408 / 429: retried with exponential backoff
    (backoff_s, 2 backoff_s, ...); after max_retries retries -> JudgeUnavailableError.
  * other HTTP errors (400, 401, 404, ...) or a body that is not a chat-completions response:
    JudgeUnavailableError at once (retrying cannot fix a wrong URL, model or key).
  * the model's answer is not the JSON asked for: that image scores 0 and a warning is logged;
    one badly formatted answer should not stop a training run.
The API key is read from the environment variable named api_key_env at call time; it is only
sent in the Authorization header, never stored, logged or put in an error message.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image

from r3.errors import InputError
from r3.rewards.inputs import check_batch
from r3.world.verifier import descriptor

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


JUDGE_FIX = "check the judge's url and model in params and that its server is up"

REGION_PARTS = {"left": "left", "right": "right", "above": "top", "below": "bottom"}
"""The part of the image each GenEval++ region names, in the benchmark's checklist wording ("located in the left
part of the image"; its "above" / "below" read as top / bottom)."""


class JudgeUnavailableError(InputError, RuntimeError):
    """The judge endpoint could not give an answer; the message is one line and ends with the fix."""


def _plural(word: str) -> str:
    return word + "es" if word.endswith(("s", "x", "z", "ch", "sh")) else word + "s"


def _describe(entry: dict[str, Any], count: int) -> str:
    """'2 small red circles' style phrase for a GenEval include/exclude entry (a relative size is a fact of its own,
    not a word of the phrase)."""
    noun = str(entry["class"]) if count == 1 else _plural(str(entry["class"]))
    _, color, size = descriptor(entry)
    return " ".join([*(str(w) for w in (size, color) if w), noun])


def checklist(record: dict[str, Any]) -> list[str]:
    """The facts a record asserts, one sentence each (GenEval count semantics).

    include {class, count, color?, size?, position?: [relation, index], region?}: at least `count`
    matching objects, each standing in `relation` to the objects of include[index], each located in
    its region's part of the image (REGION_PARTS), and with `size: larger`, each larger than each object
    of every include with `size: smaller` (one fact per such pair);
    exclude {class, count, ...}: fewer than `count` matching objects. An exclude of count + 1
    of the same kind as an include (how ShapeWorld writes exact counts) merges into "exactly".
    """
    includes = list(record.get("include", []))
    excludes = list(record.get("exclude", []))
    facts: list[str] = []
    for inc in includes:
        count = int(inc.get("count", 1))
        exact = next((ex for ex in excludes if descriptor(ex) == descriptor(inc) and int(ex["count"]) == count + 1),
                     None)
        if exact is not None:
            excludes.remove(exact)
        quantifier = "exactly" if exact is not None else "at least"
        facts.append(f"there {'is' if count == 1 else 'are'} {quantifier} {count} {_describe(inc, count)}")
        if inc.get("position"):
            relation, index = inc["position"]
            facts.append(f"each {_describe(inc, 1)} is {relation} each {_describe(includes[int(index)], 1)}")
        if inc.get("region"):
            facts.append(f"each {_describe(inc, 1)} is located in the {REGION_PARTS[inc['region']]} part of the image")
        if inc.get("size") == "larger":
            facts += [f"each {_describe(inc, 1)} is larger than each {_describe(other, 1)}"
                      for other in includes if other.get("size") == "smaller"]
    for ex in excludes:
        count = int(ex["count"])
        if count == 1:
            facts.append(f"there is no {_describe(ex, 1)}")
        else:
            facts.append(f"there are fewer than {count} {_describe(ex, count)}")
    return facts or ["the image matches the description"]


def judge_question(record: dict[str, Any], facts: Sequence[str]) -> str:
    numbered = "\n".join(f"{i + 1}. {fact}" for i, fact in enumerate(facts))
    return (
        f'The image was generated for the description: "{record["prompt"]}".\n'
        "Check each fact below against the image. Answer with JSON only, no other text, in the form "
        '{"facts": [{"fact": "<the fact>", "holds": true or false}, ...], "aligned": true or false}, '
        'with the facts in the given order; "aligned" is true only if every fact holds.\n'
        f"Facts:\n{numbered}"
    )


def png_data_url(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> 'data:image/png;base64,...'."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def yes_no_question(record: dict[str, Any]) -> str:
    """The request for a record that brings its own yes/no questions."""
    numbered = "\n".join(f"{i + 1}. {question}" for i, question in enumerate(record["questions"]))
    return (
        f'The image was generated for the description: "{record["prompt"]}".\n'
        "Answer each question below about the image with yes or no. Answer with JSON only, no other text, in the "
        'form {"answers": ["yes" or "no", ...]}, one answer per question in the given order.\n'
        f"Questions:\n{numbered}"
    )


def _json_object(content: str) -> Any:
    """The outermost {...} of the judge's text (text or code fences around it are tolerated)."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    return json.loads(content[start : end + 1])


def parse_yes_no_answer(content: str, expected: Sequence[str]) -> tuple[int, float]:
    """(strict, partial) from the judge's answers to yes/no questions, against the `expected` "yes" / "no";
    ValueError if the text is not the JSON asked for."""
    answer = _json_object(content)
    answers = answer.get("answers") if isinstance(answer, dict) else None
    if not isinstance(answers, list) or len(answers) != len(expected):
        raise ValueError(f"expected an 'answers' list of {len(expected)} entries")
    said = [a.strip(" .").lower() if isinstance(a, str) else None for a in answers]
    if not all(a in ("yes", "no") for a in said):
        raise ValueError("every answer must be 'yes' or 'no'")
    matched = sum(a == e for a, e in zip(said, expected, strict=True))
    return int(matched == len(expected)), matched / len(expected)


def parse_judge_answer(content: str, n_facts: int) -> tuple[int, float]:
    """(strict, partial) from the judge's text; ValueError if it is not the JSON asked for."""
    answer = _json_object(content)
    facts = answer.get("facts") if isinstance(answer, dict) else None
    if not isinstance(facts, list) or len(facts) != n_facts:
        raise ValueError(f"expected a 'facts' list of {n_facts} entries")
    holds = [fact.get("holds") if isinstance(fact, dict) else None for fact in facts]
    if not all(isinstance(h, bool) for h in holds):
        raise ValueError("every fact needs a boolean 'holds'")
    n_true = sum(holds)
    return int(n_true == n_facts), n_true / n_facts


class JudgeReward:
    """Alignment judged by a VLM at {url}/chat/completions (OpenAI-compatible, e.g. vLLM)."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str | None = "R3_JUDGE_API_KEY",
        allow_missing_key: bool = True,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        mode: Literal["strict", "partial"] = "partial",
        max_workers: int = 8,
        max_tokens: int = 1024,
    ) -> None:
        """url: base URL, e.g. http://127.0.0.1:8000/v1. model: the served model name.
        api_key_env: environment variable holding the API key (None: never send one).
        allow_missing_key: if False, an unset api_key_env is an error (endpoints that need auth).
        timeout_s: per-request timeout. max_retries: retries after the first attempt.
        backoff_s: sleep before the first retry, doubled for each further one.
        mode: "strict" (all facts hold) or "partial" (fraction of facts that hold).
        max_workers: concurrent requests. max_tokens: the judge's answer budget.
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"JudgeReward: url must start with http:// or https://, got {url!r}")
        if mode not in ("strict", "partial"):
            raise ValueError(f"JudgeReward: mode must be 'strict' or 'partial', got {mode!r}")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or max_workers < 1 or max_tokens < 1:
            raise ValueError(
                "JudgeReward: need timeout_s > 0, max_retries >= 0, backoff_s >= 0, max_workers >= 1, "
                f"max_tokens >= 1; got {timeout_s}, {max_retries}, {backoff_s}, {max_workers}, {max_tokens}"
            )
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.allow_missing_key = allow_missing_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.mode = mode
        self.max_workers = max_workers
        self.max_tokens = max_tokens
        self.name = f"judge_{mode}"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        n = check_batch(images, records, self.name)
        if n == 0:
            return np.zeros(0)
        headers = self._headers()
        with ThreadPoolExecutor(max_workers=min(self.max_workers, n)) as pool:
            scores = list(pool.map(lambda i: self._score_one(images[i], records[i], headers), range(n)))
        return np.array(scores, dtype=np.float64)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif not self.allow_missing_key:
            raise ValueError(
                f"{self.name}: environment variable {self.api_key_env} is not set "
                "(set it, or allow_missing_key=True for an endpoint without auth)"
            )
        return headers

    def _score_one(self, image: np.ndarray, record: dict[str, Any], headers: dict[str, str]) -> float:
        if "questions" in record:
            request = yes_no_question(record)
            parse = partial(parse_yes_no_answer, expected=record["answers"])
        else:
            facts = checklist(record)
            request = judge_question(record, facts)
            parse = partial(parse_judge_answer, n_facts=len(facts))
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                        {"type": "text", "text": request},
                    ],
                }
            ],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        response = self._post(json.dumps(body).encode("utf-8"), headers)
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailableError(
                f"judge {self.endpoint} did not answer in the chat-completions format; {JUDGE_FIX}"
            ) from None
        try:
            strict, share = parse(str(content))
        except ValueError as err:
            log.warning(
                "judge %s: malformed answer for %r scored 0 (%s): %.200r",
                self.endpoint, record["prompt"], err, content,
            )
            return 0.0
        return float(strict) if self.mode == "strict" else share

    def _post(self, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
        attempts = self.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt > 0:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    raw = reply.read()
            except urllib.error.HTTPError as err:
                err.close()
                if err.code not in RETRY_STATUS:
                    raise JudgeUnavailableError(
                        f"judge {self.endpoint} rejected the request: HTTP {err.code} {err.reason}; {JUDGE_FIX}"
                    ) from None
                problem = f"HTTP {err.code} {err.reason}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                problem = str(getattr(err, "reason", err)) or type(err).__name__
                continue
            try:
                return json.loads(raw)
            except ValueError:
                raise JudgeUnavailableError(
                    f"judge {self.endpoint} answered something that is not JSON; {JUDGE_FIX}") from None
        raise JudgeUnavailableError(
            f"judge {self.endpoint} unavailable after {attempts} attempt(s): {problem}; {JUDGE_FIX}")
