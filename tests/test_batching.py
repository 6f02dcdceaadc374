from embedopt import Embedder
from embedopt.batching import dedupe, plan_batches


def test_dedupe_keeps_first_seen_order():
    unique, inverse = dedupe(["b", "a", "b", "c", "a"])
    assert unique == ["b", "a", "c"]
    assert [unique[i] for i in inverse] == ["b", "a", "b", "c", "a"]


def test_plan_sorts_longest_first_and_covers_every_text_once():
    texts = ["x" * n for n in (3, 10, 1, 7, 7, 2, 9)]
    batches = plan_batches(texts, max_batch=3)
    flat = [i for b in batches for i in b.indices]
    assert sorted(flat) == list(range(len(texts)))
    assert [len(texts[i]) for i in flat] == sorted(map(len, texts), reverse=True)
    assert all(len(b.indices) <= 3 for b in batches)


def test_plan_respects_token_budget_and_isolates_oversized_texts():
    texts = ["a"] * 6
    counts = [4, 4, 4, 9, 1, 1]
    batches = plan_batches(texts, max_batch=10, max_batch_tokens=8, token_counts=counts)
    for b in batches:
        assert b.tokens == sum(counts[i] for i in b.indices)
        assert b.tokens <= 8 or len(b.indices) == 1
    assert sorted(i for b in batches for i in b.indices) == list(range(6))


def test_embedder_restores_order_and_embeds_duplicates_once(fake_provider, recorder):
    texts = ["short", "a much longer text than the others", "mid length", "short", "tiny", "mid length"]
    out = Embedder(fake_provider, normalize=False).embed_documents(texts)
    # every unique text went to the provider exactly once
    assert sorted(recorder.texts_seen) == sorted(set(texts))
    # batches were cut at max_batch=4 and sorted by length
    assert [len(b) for b, _ in recorder.calls] == [4]
    assert recorder.calls[0][0][0] == "a much longer text than the others"
    # each row is the vector of the text at that position
    singles = Embedder(fake_provider, normalize=False)
    for i, t in enumerate(texts):
        assert (out[i] == singles.embed_documents([t])[0]).all()


def test_embedder_batches_by_max_batch(fake_provider, recorder):
    Embedder(fake_provider).embed_documents([f"text {i}" for i in range(10)])
    assert [len(b) for b, _ in recorder.calls] == [4, 4, 2]
