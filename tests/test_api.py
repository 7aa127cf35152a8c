"""The HTTP API of ``emostream serve`` in-process: results, health, metrics and bad input.

Every refusal is a 4xx (or 503) with the JSON body ``{"error": code, "detail": sentence}``
(docs/ARCHITECTURE.md, "Signalling and results"), and never takes the process down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from emostream.models.repository import ModelRepository
from emostream.settings import Settings
from emostream.stream.app import create_app
from emostream.training.fer_import import NAME

JPEG = {"content-type": "image/jpeg"}
PNG = {"content-type": "image/png"}


# --- helpers and fixtures -----------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _gray_png(height: int = 120, width: int = 160) -> bytes:
    """A uniform gray picture: certainly no face in it."""
    return _png(np.full((height, width, 3), 128, np.uint8))


def _noisy_jpeg(height: int = 480, width: int = 640) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _client(settings: Settings) -> TestClient:
    # raise_server_exceptions=False: a crash shows as the 500 a real client would see.
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body


def _classes(repo: ModelRepository) -> list[str]:
    return repo.card(NAME, repo.resolve(NAME)).classes


def _expected_ref(repo: ModelRepository) -> str:
    return f"{NAME}/{repo.resolve(NAME)}"


def _check_face_message(
    body: dict[str, object], width: int, height: int, classes: list[str]
) -> None:
    assert body["schema"] == 1
    assert body["type"] == "face"
    assert body["width"] == width and body["height"] == height
    assert isinstance(body["seq"], int)
    assert isinstance(body["latency_ms"], int | float) and body["latency_ms"] >= 0
    faces = body["faces"]
    assert isinstance(faces, list)
    for face in faces:
        assert face["label"] in classes, face
        assert set(face["scores"]) == set(classes), face
        assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-3), face
        assert all(0.0 <= p <= 1.0 for p in face["scores"].values()), face
        assert face["label"] == max(face["scores"], key=face["scores"].get), face
        assert face["confidence"] == pytest.approx(face["scores"][face["label"]]), face
        assert face["unsure"] is (face["confidence"] < 0.5), face  # results.unsure_below
        x, y, w, h = face["box"]
        assert w > 0 and h > 0, face
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, (face, width, height)


@pytest.fixture(scope="module")
def client(repo: ModelRepository) -> Iterator[TestClient]:
    with _client(Settings(model_root=repo.root)) as c:
        yield c


@pytest.fixture(scope="module")
def small_client(repo: ModelRepository) -> Iterator[TestClient]:
    """Body limit of 1000 bytes, pixel limit of 10 000."""
    with _client(Settings(model_root=repo.root, max_body_bytes=1000, max_pixels=10_000)) as c:
        yield c


@pytest.fixture()
def empty_client(tmp_path: Path) -> Iterator[TestClient]:
    root = tmp_path / "no-models"
    root.mkdir()
    with _client(Settings(model_root=root)) as c:
        yield c


@pytest.fixture(scope="session")
def justin(media: Path) -> bytes:
    return (media / "justin.jpg").read_bytes()


def _justin_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return int(image.shape[1]), int(image.shape[0])


def _counter(client: TestClient, sample: str, **labels: str) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    total = 0.0
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


# --- health, readiness, metrics ---------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_names_the_served_model(client: TestClient, repo: ModelRepository) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert body["models"]["face"]["model"] == _expected_ref(repo)
    assert body["models"]["face"]["provider"]
    assert body["models"]["detector"] == "yunet/1 (near)"  # the live default


def test_metrics_exposes_emostream_metrics(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert any(n.startswith("emostream_") for n in names), names
    assert "emostream_model_info" in names


def test_metrics_count_the_event_loops_tasks(client: TestClient) -> None:
    """The soak bench's leak gauge: at least the scrape's own task is alive."""
    assert _counter(client, "emostream_asyncio_tasks") >= 1


def test_metrics_count_predictions_after_a_predict(client: TestClient) -> None:
    before = _counter(client, "emostream_predictions_total", model=NAME, modality="face")
    response = client.post("/v1/predict?detect=false", content=_gray_png(), headers=PNG)
    assert response.status_code == 200, response.text
    label = response.json()["faces"][0]["label"]
    text = client.get("/metrics").text
    assert "emostream_predictions_total" in text
    after = _counter(client, "emostream_predictions_total", model=NAME, modality="face")
    assert after == before + 1
    assert _counter(client, "emostream_predictions_total", label=label) >= 1


def test_metrics_count_rejected_requests(client: TestClient) -> None:
    labels = {"endpoint": "/v1/predict", "error": "not_an_image"}
    before = _counter(client, "emostream_requests_rejected_total", **labels)
    _assert_error(
        client.post("/v1/predict", content=b"nope" * 100, headers=JPEG), 415, "not_an_image"
    )
    assert _counter(client, "emostream_requests_rejected_total", **labels) == before + 1


# --- predict: good input ------------------------------------------------------------------


def test_predict_raw_jpeg(client: TestClient, repo: ModelRepository, justin: bytes) -> None:
    response = client.post("/v1/predict", content=justin, headers=JPEG)
    assert response.status_code == 200, response.text
    body = response.json()
    width, height = _justin_size(justin)
    _check_face_message(body, width, height, _classes(repo))
    assert len(body["faces"]) == 1, body
    assert body["model"] == _expected_ref(repo)


def test_predict_multipart_file(client: TestClient, repo: ModelRepository, justin: bytes) -> None:
    response = client.post("/v1/predict", files={"file": ("justin.jpg", justin, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    width, height = _justin_size(justin)
    _check_face_message(body, width, height, _classes(repo))
    assert len(body["faces"]) == 1, body


def test_predict_octet_stream(client: TestClient, repo: ModelRepository) -> None:
    response = client.post(
        "/v1/predict", content=_gray_png(), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    _check_face_message(response.json(), 160, 120, _classes(repo))


def test_predict_without_detection_is_one_whole_image_face(
    client: TestClient, repo: ModelRepository
) -> None:
    response = client.post("/v1/predict?detect=false", content=_gray_png(90, 70), headers=PNG)
    assert response.status_code == 200, response.text
    body = response.json()
    _check_face_message(body, 70, 90, _classes(repo))
    assert len(body["faces"]) == 1, body
    assert body["faces"][0]["box"] == [0, 0, 70, 90]


def test_predict_justin_without_detection(
    client: TestClient, repo: ModelRepository, justin: bytes
) -> None:
    response = client.post("/v1/predict?detect=false", content=justin, headers=JPEG)
    assert response.status_code == 200, response.text
    body = response.json()
    width, height = _justin_size(justin)
    _check_face_message(body, width, height, _classes(repo))
    assert [f["box"] for f in body["faces"]] == [[0, 0, width, height]]


def test_predict_no_face_gives_empty_list(client: TestClient, repo: ModelRepository) -> None:
    response = client.post("/v1/predict", content=_gray_png(), headers=PNG)
    assert response.status_code == 200, response.text
    body = response.json()
    _check_face_message(body, 160, 120, _classes(repo))
    assert body["faces"] == []


def test_predict_multipart_with_other_fields_first(
    client: TestClient, repo: ModelRepository
) -> None:
    response = client.post(
        "/v1/predict",
        data={"note": "hello"},
        files={"file": ("gray.png", _gray_png(), "image/png")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == []


def test_eight_concurrent_predicts_all_succeed(client: TestClient, repo: ModelRepository) -> None:
    image = _gray_png()

    def one(i: int) -> httpx.Response:
        detect = "true" if i % 2 else "false"
        response: httpx.Response = client.post(
            f"/v1/predict?detect={detect}", content=image, headers=PNG
        )
        return response

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    for i, r in enumerate(responses):
        body = r.json()
        _check_face_message(body, 160, 120, _classes(repo))
        assert len(body["faces"]) == (0 if i % 2 else 1), body
    seqs = [r.json()["seq"] for r in responses]
    assert len(set(seqs)) == 8, seqs


# --- predict: bad input, one test each ----------------------------------------------------


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=_gray_png(), headers={"content-type": "text/plain"}
    )
    _assert_error(response, 415, "unsupported_media_type")


def test_no_content_type_is_415(client: TestClient) -> None:
    response = client.post("/v1/predict", content=_gray_png())
    _assert_error(response, 415, "unsupported_media_type")


def test_json_body_is_415(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"image": "aGVsbG8="})
    _assert_error(response, 415, "unsupported_media_type")


def test_non_image_bytes_are_415(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=np.random.default_rng(3).bytes(5000), headers=JPEG
    )
    _assert_error(response, 415, "not_an_image")


def test_truncated_jpeg_is_422(client: TestClient) -> None:
    jpeg = _noisy_jpeg()
    response = client.post("/v1/predict", content=jpeg[: len(jpeg) // 2], headers=JPEG)
    _assert_error(response, 422, "corrupt_image")


def test_empty_body_is_400(client: TestClient) -> None:
    _assert_error(client.post("/v1/predict", content=b"", headers=JPEG), 400, "empty_body")


def test_empty_multipart_body_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=b"", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    _assert_error(response, 400, "empty_body")


def test_empty_multipart_file_is_400(client: TestClient) -> None:
    response = client.post("/v1/predict", files={"file": ("empty.jpg", b"", "image/jpeg")})
    _assert_error(response, 400, "empty_body")


def test_body_over_limit_with_content_length_is_413(small_client: TestClient) -> None:
    body = b"\xff" * 5000
    response = small_client.post(
        "/v1/predict", content=body, headers={**JPEG, "content-length": str(len(body))}
    )
    _assert_error(response, 413, "body_too_large")


def test_body_over_limit_chunked_is_413(small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"\xff" * 500

    response = small_client.post("/v1/predict", content=chunks(), headers=JPEG)
    assert "content-length" not in response.request.headers
    _assert_error(response, 413, "body_too_large")


def test_multipart_body_over_limit_is_413(small_client: TestClient) -> None:
    response = small_client.post(
        "/v1/predict", files={"file": ("big.jpg", b"\xff" * 5000, "image/jpeg")}
    )
    _assert_error(response, 413, "body_too_large")


def test_body_under_limit_passes_the_size_check(small_client: TestClient) -> None:
    data = _png(np.full((8, 8, 3), 128, np.uint8))
    assert len(data) < 1000
    response = small_client.post("/v1/predict", content=data, headers=PNG)
    assert response.status_code == 200, response.text


def test_image_over_max_pixels_is_413(small_client: TestClient) -> None:
    data = _png(np.zeros((101, 100), np.uint8))  # 10 100 pixels, tiny on the wire
    assert len(data) < 1000
    response = small_client.post("/v1/predict", content=data, headers=PNG)
    _assert_error(response, 413, "too_many_pixels")


def test_decompression_bomb_is_413(repo: ModelRepository) -> None:
    """5000x5000 zero pixels (25 M) in a few KB, against a server limit of 1 M pixels."""
    bomb = _png(np.zeros((5000, 5000), np.uint8))
    assert len(bomb) < 100_000
    settings = Settings(model_root=repo.root, max_pixels=1_000_000)
    with _client(settings) as c:
        _assert_error(c.post("/v1/predict", content=bomb, headers=PNG), 413, "too_many_pixels")


def test_multipart_without_file_field_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/predict",
        data={"image": "not a file"},
        files={"other": (None, b"field, not a file")},
    )
    _assert_error(response, 400, "no_file")


def test_multipart_garbage_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/predict",
        content=b"this is not multipart at all",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    _assert_error(response, 400, "bad_multipart")


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        + _gray_png()
        + b"\r\n--x--\r\n"
    )
    response = client.post(
        "/v1/predict", content=body, headers={"content-type": "multipart/form-data"}
    )
    _assert_error(response, 400, "bad_multipart")


def test_multipart_part_without_name_is_400(client: TestClient) -> None:
    body = (
        b'--x\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n'
        + _gray_png()
        + b"\r\n--x--\r\n"
    )
    response = client.post(
        "/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    _assert_error(response, 400, "bad_multipart")


def test_multipart_with_corrupt_image_file_is_422(client: TestClient) -> None:
    jpeg = _noisy_jpeg()
    response = client.post(
        "/v1/predict", files={"file": ("half.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")}
    )
    _assert_error(response, 422, "corrupt_image")


def test_invalid_detect_value_is_422(client: TestClient) -> None:
    response = client.post("/v1/predict?detect=maybe", content=_gray_png(), headers=PNG)
    _assert_error(response, 422, "invalid_request")
    assert "detect" in response.json()["detail"]


def test_get_on_predict_is_405(client: TestClient) -> None:
    assert client.get("/v1/predict").status_code == 405


# --- no model -------------------------------------------------------------------------------


def test_readyz_without_model_is_503_with_the_fix(empty_client: TestClient) -> None:
    response = empty_client.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["ready"] is False
    assert "emostream models pull face-emotion" in body["reason"], body


def test_healthz_without_model_is_200(empty_client: TestClient) -> None:
    assert empty_client.get("/healthz").status_code == 200


def test_predict_without_model_is_503(empty_client: TestClient) -> None:
    response = empty_client.post("/v1/predict", content=_gray_png(), headers=PNG)
    _assert_error(response, 503, "model_unavailable")
    assert "emostream models pull face-emotion" in response.json()["detail"]


# --- the process survives bad input ---------------------------------------------------------


def _bad_requests(jpeg: bytes) -> list[tuple[Callable[[TestClient], httpx.Response], int]]:
    def chunked() -> Iterator[bytes]:
        yield b"\xff" * 600
        yield b"\xff" * 600

    multipart = {"content-type": "multipart/form-data; boundary=xyz"}
    return [
        (
            lambda c: c.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}),
            415,
        ),
        (lambda c: c.post("/v1/predict", content=b"\x00garbage" * 50, headers=JPEG), 415),
        (lambda c: c.post("/v1/predict", content=jpeg[: len(jpeg) // 2][:900], headers=JPEG), 422),
        (lambda c: c.post("/v1/predict", content=b"", headers=JPEG), 400),
        (lambda c: c.post("/v1/predict", content=b"\xff" * 2000, headers=JPEG), 413),
        (lambda c: c.post("/v1/predict", content=chunked(), headers=JPEG), 413),
        (
            lambda c: c.post(
                "/v1/predict", content=_png(np.zeros((200, 200), np.uint8)), headers=PNG
            ),
            413,
        ),
        (lambda c: c.post("/v1/predict", files={"a": (None, b"b")}), 400),
        (lambda c: c.post("/v1/predict", content=b"nonsense", headers=multipart), 400),
        (lambda c: c.post("/v1/predict?detect=maybe", content=b"x", headers=PNG), 422),
    ]


def test_good_request_after_a_burst_of_bad_ones(repo: ModelRepository) -> None:
    jpeg = _noisy_jpeg(60, 80)
    good = _png(np.full((8, 8, 3), 128, np.uint8))
    settings = Settings(model_root=repo.root, max_body_bytes=1000, max_pixels=10_000)
    with _client(settings) as c:
        for _ in range(3):
            for send, status in _bad_requests(jpeg):
                response = send(c)
                assert response.status_code == status, response.text
                body = response.json()
                assert body["error"] and body["detail"], body
        response = c.post("/v1/predict?detect=false", content=good, headers=PNG)
        assert response.status_code == 200, response.text
        assert len(response.json()["faces"]) == 1
        assert c.get("/readyz").status_code == 200
