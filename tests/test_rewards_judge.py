"""JudgeReward against a real local HTTP server that speaks the OpenAI chat-completions shape."""

import base64
import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from r3.rewards import JudgeReward, JudgeUnavailableError
from r3.rewards.judge import checklist, parse_judge_answer, parse_yes_no_answer

KEY_ENV = "R3_TEST_JUDGE_KEY"
KEY = "sk-test-0123456789"
RECORD = {
    "tag": "color_spatial_attr",
    "include": [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "square", "count": 2, "color": "blue", "position": ["right of", 0]},
    ],
    "exclude": [{"class": "circle", "count": 2, "color": "red"}, {"class": "square", "count": 3, "color": "blue"}],
    "prompt": "two blue squares right of a red circle",
}
FACTS = checklist(RECORD)
IMAGES = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)


def chat_reply(content: str) -> tuple[int, dict]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def facts_answer(holds: list[bool]) -> str:
    return json.dumps({"facts": [{"fact": f, "holds": h} for f, h in zip(FACTS, holds)], "aligned": all(holds)})


class FakeJudge(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        length = int(self.headers["Content-Length"])
        server.requests.append((self.path, dict(self.headers), json.loads(self.rfile.read(length))))
        default = (*chat_reply(facts_answer([True] * len(FACTS))), 0.0)
        status, body, delay = server.replies.pop(0) if server.replies else default
        time.sleep(delay)
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    httpd.requests, httpd.replies = [], []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def judge_for(httpd, **kwargs) -> JudgeReward:
    params = dict(api_key_env=KEY_ENV, timeout_s=2.0, max_retries=2, backoff_s=0.01) | kwargs
    return JudgeReward(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "judge-vlm", **params)


def test_checklist_from_record():
    assert FACTS == [
        "there is exactly 1 red circle",
        "there are exactly 2 blue squares",
        "each blue square is right of each red circle",
    ]
    geneval = {"include": [{"class": "bus", "count": 2}], "exclude": [{"class": "dog", "count": 1}], "prompt": "x"}
    assert checklist(geneval) == ["there are at least 2 buses", "there is no dog"]


def test_checklist_asks_about_geneval_pp_regions_and_relative_sizes():
    spatial = {"tag": "spatial_count_attr", "include": [{"class": "clock", "count": 3, "region": "left"},
               {"class": "cat", "count": 1, "region": "right"}], "exclude": [{"class": "clock", "count": 4}],
               "prompt": "A photo of three clocks on the left and one cats on the right"}  # fmt: skip
    assert checklist(spatial) == [
        "there are exactly 3 clocks",
        "each clock is located in the left part of the image",
        "there is at least 1 cat",
        "each cat is located in the right part of the image",
    ]
    sized = {"tag": "size_spatial_attr",
             "include": [{"class": "bench", "count": 1, "size": "larger", "region": "above"},
                         {"class": "spoon", "count": 1, "size": "smaller", "region": "below"}],
             "exclude": [{"class": "bench", "count": 2}, {"class": "spoon", "count": 2}],
             "prompt": "A photo of a larger bench on the above and a smaller spoon on the below"}  # fmt: skip
    assert checklist(sized) == [
        "there is exactly 1 bench",
        "each bench is located in the top part of the image",
        "each bench is larger than each spoon",
        "there is exactly 1 spoon",
        "each spoon is located in the bottom part of the image",
    ]


def test_request_shape_key_and_partial_score(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.replies.append((*chat_reply(facts_answer([True, False, True])), 0.0))
    scores = judge_for(server)(IMAGES, [RECORD])
    np.testing.assert_allclose(scores, [2 / 3])
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "judge-vlm"
    parts = {part["type"]: part for part in body["messages"][0]["content"]}
    url = parts["image_url"]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, IMAGES[0])
    assert RECORD["prompt"] in parts["text"]["text"] and all(fact in parts["text"]["text"] for fact in FACTS)


def test_strict_mode(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.replies.append((*chat_reply(facts_answer([True, False, True])), 0.0))
    server.replies.append((*chat_reply(facts_answer([True] * 3)), 0.0))
    judge = judge_for(server, mode="strict", max_workers=1)
    np.testing.assert_array_equal(judge(np.concatenate([IMAGES, IMAGES]), [RECORD, RECORD]), [0.0, 1.0])


def test_no_key_when_variable_unset_and_allowed(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    np.testing.assert_allclose(judge_for(server)(IMAGES, [RECORD]), [1.0])
    assert "Authorization" not in server.requests[0][1]
    with pytest.raises(ValueError, match=f"environment variable {KEY_ENV} is not set"):
        judge_for(server, allow_missing_key=False)(IMAGES, [RECORD])


def test_retries_after_a_server_error(server):
    server.replies.append((500, {"error": "overloaded"}, 0.0))
    np.testing.assert_allclose(judge_for(server)(IMAGES, [RECORD]), [1.0])
    assert len(server.requests) == 2


def test_client_error_is_not_retried_and_hides_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.replies.append((401, {"error": "bad key"}, 0.0))
    with pytest.raises(JudgeUnavailableError, match="HTTP 401") as err:
        judge_for(server)(IMAGES, [RECORD])
    assert len(server.requests) == 1 and KEY not in str(err.value)


def test_down_endpoint_fails_quickly_naming_the_url(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    judge = JudgeReward(url, "m", api_key_env=KEY_ENV, timeout_s=0.5, max_retries=2, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailableError) as err:
        judge(IMAGES, [RECORD])
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in message and "3 attempt(s)" in message
    assert "\n" not in message and KEY not in message


def test_timeout_is_retried_then_fails(server):
    server.replies += [(*chat_reply(facts_answer([True] * 3)), 1.0)] * 2
    start = time.monotonic()
    with pytest.raises(JudgeUnavailableError, match="unavailable after 2 attempt"):
        judge_for(server, timeout_s=0.1, max_retries=1)(IMAGES, [RECORD])
    assert time.monotonic() - start < 1.0


def test_malformed_answer_scores_zero_with_a_warning(server, caplog):
    server.replies.append((*chat_reply("The image looks great!"), 0.0))
    with caplog.at_level(logging.WARNING, logger="r3.rewards.judge"):
        scores = judge_for(server)(IMAGES, [RECORD])
    np.testing.assert_array_equal(scores, [0.0])
    assert "malformed answer" in caplog.text


def test_non_chat_completions_body_is_an_error(server):
    server.replies.append((200, {"result": "ok"}, 0.0))
    with pytest.raises(JudgeUnavailableError, match="chat-completions format"):
        judge_for(server)(IMAGES, [RECORD])


def test_parse_judge_answer_variants():
    fenced = "```json\n" + facts_answer([True, True, False]) + "\n```"
    assert parse_judge_answer(fenced, 3) == (0, pytest.approx(2 / 3))
    assert parse_judge_answer(facts_answer([True] * 3), 3) == (1, 1.0)
    with pytest.raises(ValueError, match="3 entries"):
        parse_judge_answer(facts_answer([True, True]), 3)
    with pytest.raises(ValueError, match="boolean"):
        parse_judge_answer('{"facts": [{"fact": "a", "holds": "yes"}]}', 1)


# a TIIF item as the evaluate stage passes it (r3.world.tiif_io.prompt_records): the judge asks its own questions
TIIF_RECORD = {"prompt": "A lamp stands to the right of a sofa.", "tag": "2d_spatial_relation",
               "questions": ["Is there a lamp in the image?", "Is there a sofa in the image?",
                             "Is the lamp on the left of the sofa?"],
               "answers": ["yes", "yes", "no"]}  # fmt: skip


def test_a_record_with_yes_no_questions_is_asked_them_and_scores_the_share_answered_as_expected(server):
    server.replies.append((*chat_reply('{"answers": ["yes", "no", "no"]}'), 0.0))
    server.replies.append((*chat_reply('{"answers": ["Yes", "yes", "no."]}'), 0.0))
    scores = judge_for(server, max_workers=1)(np.concatenate([IMAGES, IMAGES]), [TIIF_RECORD, TIIF_RECORD])
    np.testing.assert_allclose(scores, [2 / 3, 1.0])
    text = next(p for p in server.requests[0][2]["messages"][0]["content"] if p["type"] == "text")["text"]
    assert TIIF_RECORD["prompt"] in text and all(f"{i + 1}. {q}" in text
                                                 for i, q in enumerate(TIIF_RECORD["questions"]))
    assert '"answers"' in text and "facts" not in text.lower()  # its own questions, not the GenEval checklist
    server.replies.append((*chat_reply('{"answers": ["yes", "no", "no"]}'), 0.0))
    np.testing.assert_array_equal(judge_for(server, mode="strict")(IMAGES, [TIIF_RECORD]), [0.0])


def test_parse_yes_no_answer_variants():
    expected = ["yes", "no"]
    assert parse_yes_no_answer('Sure: ```{"answers": ["YES", "No"]}```', expected) == (1, 1.0)
    assert parse_yes_no_answer('{"answers": ["no", "no"]}', expected) == (0, 0.5)
    with pytest.raises(ValueError, match="2 entries"):
        parse_yes_no_answer('{"answers": ["yes"]}', expected)
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        parse_yes_no_answer('{"answers": ["yes", "maybe"]}', expected)
