"""CKIP backend: a tiny random BERT token-classification model made on disk, loaded offline."""
import os

# Before transformers / huggingface_hub are imported (they read these once): nothing may be downloaded.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import socket
import sys

import pytest

pytest.importorskip("ckip_transformers")

import torch  # noqa: E402
from ckip_transformers.nlp import CkipWordSegmenter  # noqa: E402
from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast  # noqa: E402

from kdedge.text.segment_ckip import INSTALL_HINT, CkipTokenizer  # noqa: E402

TEXTS = [
    "我愛台灣",
    "今天天氣很好，我們去公園散步。",
    "  台北  市政府\t發布\n新聞稿\u3000今天  ",
    "機器學習模型",
    "我",
    "中文斷詞測試：自然語言處理",
]
LONG = "自然語言處理是人工智慧的一個分支" * 12  # 192 chars: longer than the model's 64 positions
OOV = "ABC 喵喵🐱xyz"  # characters missing from the vocabulary become [UNK] and still come back
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _chars(*texts):
    return sorted({c for t in texts for c in t if not c.isspace()} - set(OOV))


def _write_model(path, seed=0, force=None):
    """A 1-layer BERT with labels {0: B, 1: I}; `force` = "B" / "I" makes that label always win."""
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(SPECIALS + _chars(*TEXTS, LONG)) + "\n", encoding="utf-8")
    # from_pretrained on a directory with vocab.txt: transformers 5 ignores BertTokenizerFast(vocab_file=...).
    tokenizer = BertTokenizerFast.from_pretrained(str(path))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        id2label={0: "B", 1: "I"}, label2id={"B": 0, "I": 1})
    model = BertForTokenClassification(config)
    if force is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([1.0, 0.0] if force == "B" else [0.0, 1.0]))
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckip")
    return {"random": _write_model(root / "tiny-ws"),
            "all_b": _write_model(root / "all-b", force="B"),
            "all_i": _write_model(root / "all-i", force="I")}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="session")
def tokenizer(models):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", lambda *a: pytest.fail(f"network access attempted: {a!r}"))
        mp.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"network access attempted: {a!r}"))
        return CkipTokenizer(str(models["random"]), batch_size=2, device=-1)


def _stripped(text):
    return "".join(text.split())


def test_fixture_vocab_covers_the_test_characters(tokenizer):
    tok = tokenizer._ws.tokenizer
    ids = tok.convert_tokens_to_ids(list(_stripped("".join(TEXTS) + LONG)))
    assert tok.unk_token_id not in ids


def test_loads_from_local_dir_through_ckip_word_segmenter(tokenizer, models, no_network):
    assert isinstance(tokenizer._ws, CkipWordSegmenter)
    assert tokenizer._ws.model.config.id2label == {0: "B", 1: "I"}
    assert tokenizer._ws.device == torch.device("cpu")
    # A second load with the network refused for the whole call.
    again = CkipTokenizer(str(models["random"]), device=-1)
    assert again.tokenize_many(TEXTS) == tokenizer.tokenize_many(TEXTS)


def test_tokens_reassemble_each_text_without_whitespace(tokenizer, no_network):
    out = tokenizer.tokenize_many(TEXTS + [LONG, OOV])
    assert len(out) == len(TEXTS) + 2
    for text, tokens in zip(TEXTS + [LONG, OOV], out):
        assert tokens, text
        assert "".join(tokens) == _stripped(text)
        assert all(t and not any(c.isspace() for c in t) for t in tokens)


def test_label_order_b_and_i_and_whitespace_boundaries(models):
    text = "今天 天氣很好"
    all_b = CkipTokenizer(str(models["all_b"]), device=-1)
    all_i = CkipTokenizer(str(models["all_i"]), device=-1)
    assert all_b.tokenize(text) == list("今天天氣很好")  # "B" wins everywhere: one character per word
    assert all_i.tokenize(text) == ["今天", "天氣很好"]  # "I" everywhere: whitespace is the only boundary
    assert all_i.tokenize(LONG) == [LONG]  # rows cut at the position limit still join into one word
    assert all_i.tokenize_many(TEXTS) == [t.split() for t in TEXTS]


def test_batching_matches_one_by_one(models, tokenizer):
    texts = TEXTS + [LONG, OOV, "", "好"] * 2
    one_by_one = [tokenizer.tokenize(t) for t in texts]
    for batch_size in (1, 3, 64):
        other = CkipTokenizer(str(models["random"]), batch_size=batch_size, device=-1)
        assert other.tokenize_many(texts) == one_by_one


def test_empty_and_whitespace_only_texts(tokenizer):
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize(" \t\n\u3000 ") == []
    assert tokenizer.tokenize_many([]) == []
    assert tokenizer.tokenize_many(["", "   "]) == [[], []]
    out = tokenizer.tokenize_many(["", "我愛台灣", "\n"])
    assert out[0] == [] and out[2] == []
    assert "".join(out[1]) == "我愛台灣"


def test_non_str_text_is_rejected(tokenizer):
    with pytest.raises(TypeError):
        tokenizer.tokenize_many(["我", None])


def test_missing_dir_is_a_clear_file_not_found(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        CkipTokenizer(str(missing))


def test_dir_without_config_is_a_clear_file_not_found(tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty-model.*config.json"):
        CkipTokenizer(str(empty))


def test_missing_extra_is_a_clear_import_error(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "ckip_transformers", None)
    monkeypatch.setitem(sys.modules, "ckip_transformers.nlp", None)
    with pytest.raises(ImportError) as info:
        CkipTokenizer(str(models["random"]))
    assert str(info.value) == INSTALL_HINT
    assert "pip install 'kdedge[ckip]'" in str(info.value)


def test_default_device_follows_cuda(models):
    tok = CkipTokenizer(str(models["random"]))
    assert tok.device == (0 if torch.cuda.is_available() else -1)
    assert tok._ws.model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_gpu_device_without_cuda_is_a_clear_error(models):
    with pytest.raises(ValueError, match="CUDA"):
        CkipTokenizer(str(models["random"]), device=0)


def test_spec_records_the_model_dir(tokenizer, models):
    spec = tokenizer.spec()
    assert spec == {"type": "ckip", "model_dir": str(models["random"]), "model_name": "tiny-ws", "batch_size": 2}
    assert CkipTokenizer(str(models["random"]) + os.sep, device=-1).spec()["model_name"] == "tiny-ws"
    assert tokenizer.kind == "ckip"
