"""The benches' numbers, each against a count made here by hand: FLOPs, peaks, MFU, rates,
padded positions, ratios, Kendall tau and the tables that print them. No model is loaded: fake
encoders, rerankers and clocks make every figure exact (a mutation round found these unchecked)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rerank_eval.bench import corpus_path, device, encoder, listwise
from rerank_eval.bench.listwise import PathResult
from rerank_eval.bench.table import PEAK_MEASURED_LOW, bench_table, encode_table
from rerank_eval.first_stage.dense.encoder import DenseEncoder


class Clock:
    """A perf_counter that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    for module in (device, encoder, corpus_path, listwise):
        monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=fake))
    return fake


# -- device --------------------------------------------------------------------------------------------


def test_utilisation_divides_by_each_peak_and_rounds_to_four_places():
    assert device.utilisation(50.0, (200.0, 400.0)) == {"mfu_datasheet": 0.25, "mfu_measured": 0.125}
    assert device.utilisation(1.0, (None, 3.0)) == {"mfu_datasheet": None, "mfu_measured": 0.3333}
    assert device.utilisation(2.0, (3.0, None)) == {"mfu_datasheet": 0.6667, "mfu_measured": None}


def test_the_measured_peak_is_two_flops_per_multiply_add_over_the_best_time(monkeypatch):
    intervals = iter([5.0, 0.5, 2.0, 0.5, 3.0, 0.5, 4.0, 0.5])  # the first product is slow

    class StepClock(Clock):
        def __call__(self) -> float:
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls % 2 == 0:  # a product's end: its interval after its start
                self.now += next(intervals)
            return self.now

    monkeypatch.setattr(device, "time", SimpleNamespace(perf_counter=StepClock()))
    assert device.measured_matmul_peak(torch.device("cpu"), 8, torch.float32) == 2 * 8**3 / 0.5


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_the_datasheet_peak_is_the_named_devices_dense_bf16_one(monkeypatch, name, peak):
    monkeypatch.setattr(device.torch.cuda, "get_device_name", lambda _device: name)
    assert device.datasheet_peak(torch.device("cuda")) == (name, peak)
    assert device.datasheet_peak(torch.device("cpu")) == ("cpu", None)


def test_a_cpus_peak_memory_is_the_high_water_mark_in_bytes(monkeypatch):
    monkeypatch.setattr(device.resource, "getrusage", lambda _who: SimpleNamespace(ru_maxrss=3))
    assert device.peak_memory(torch.device("cpu")) == 3 * 1024  # Linux counts kibibytes


# -- the encoder bench ---------------------------------------------------------------------------------


class Layers(torch.nn.Module):
    """A model with 16 non-embedding parameters (one 4×4 layer), 1 layer, hidden size 4."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4, bias=False)])
        self.config = SimpleNamespace(num_hidden_layers=1, hidden_size=4)


def by_hand(n: int) -> int:
    """n · (2·16 + 4·1·4·n)."""
    return 32 * n + 16 * n * n


class FakeEncoder:
    """Words + 2 tokens a text; each embed call takes the clock's next duration."""

    def __init__(self, clock: Clock, durations: list[float], packed: bool = False, pad: int = 1) -> None:
        self.clock, self.durations = clock, list(durations)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.packed_sequences, self.pad_multiple, self.max_batch_tokens = packed, pad, 1000
        self.stats = {"tokens": 0, "positions": 0}
        self.batch_sizes: list[int] = []
        self.layers = Layers()
        self.fused_kernels = False

    def tokenize(self, texts, side):
        self.clock.advance(0.25)
        return [[0] * (len(text.split()) + 2) for text in texts]

    def model(self, side):
        return self.layers

    def _run(self, texts):
        lengths = [len(text.split()) + 2 for text in texts]
        self.stats["tokens"] += sum(lengths)
        self.stats["positions"] += len(lengths) * max(lengths)  # one batch, padded to its longest
        self.clock.advance(self.durations.pop(0))
        return np.zeros((len(texts), 2), dtype=np.float32)

    def embed(self, texts, side):
        self._run(list(dict.fromkeys(texts)))
        return np.zeros((len(texts), 2), dtype=np.float32)

    def embed_straightforward(self, texts, side, batch_size):
        self.batch_sizes.append(batch_size)
        return self._run(texts)


PASSAGES = ["a b c", "d e", "a b c", "f g h i"]  # 5, 4, 5 and 6 tokens; 3 distinct
QUERIES = ["q r", "s"]


def test_ours_path_counts_distinct_passages_and_rates_the_workloads_texts(clock):
    fake = FakeEncoder(clock, [9.0, 9.0, 5.0, 0.5, 2.0])  # warm-ups, passages, queries, passages again
    result, vectors = encoder.run_path(fake, PASSAGES, QUERIES, True, (1000.0, 500.0), second_pass=True)
    flops = by_hand(5) + by_hand(4) + by_hand(6)  # each distinct passage once
    assert flops == 1712
    assert result == {
        "dtype": "float32",
        "seconds": 5.0,
        "passages_per_second": 0.8,  # 4 passages of the workload in 5 s, not the 3 encoded
        "passages_encoded": 3,
        "tokens": 15,
        "padded_positions": 3 * 6,  # what the encoder ran in the first passage pass
        "tokens_per_second": 3.0,
        "tokenize_seconds": 0.25,
        "model_flops_per_second": 1712 / 5,
        "mfu_datasheet": 0.3424,
        "mfu_measured": 0.6848,
        "query_seconds": 0.5,
        "queries_per_second": 4.0,
        "peak_gpu_memory_bytes": None,
        "second_pass": {
            "seconds": 2.0,
            "passages_per_second": 2.0,
            "tokens_per_second": 7.5,
            "model_flops_per_second": 1712 / 2,
            "mfu_datasheet": 0.856,
            "mfu_measured": 1.712,
        },
    }
    assert vectors.shape == (len(PASSAGES) + len(QUERIES), 2)


def test_the_straightforward_path_counts_every_passage(clock):
    fake = FakeEncoder(clock, [9.0, 9.0, 4.0, 0.25])
    result, _ = encoder.run_path(fake, PASSAGES, QUERIES, False, (None, 1000.0))
    flops = 2 * by_hand(5) + by_hand(4) + by_hand(6)
    assert (result["passages_encoded"], result["tokens"], result["padded_positions"]) == (4, 20, 4 * 6)
    assert result["model_flops_per_second"] == flops / 4
    assert (result["mfu_datasheet"], result["mfu_measured"]) == (None, round(flops / 4 / 1000, 4))
    assert (result["passages_per_second"], result["tokens_per_second"]) == (1.0, 5.0)
    assert (result["query_seconds"], result["queries_per_second"]) == (0.25, 8.0)
    assert "second_pass" not in result
    assert set(fake.batch_sizes) == {32}  # sentence-transformers' default


def test_flops_per_sequence_by_hand():
    flops_of = encoder.flops_per_sequence(SimpleNamespace(num_hidden_layers=3, hidden_size=5), 7)
    assert flops_of(2) == 2 * (2 * 7 + 4 * 3 * 5 * 2) == 268
    assert encoder.non_embedding_parameters(Layers()) == 16


def test_positions_run_are_those_of_each_chunks_batches(tmp_path):
    """`embed` batches each chunk of texts apart (on a GPU 1,024 texts, then 2,048, ...), so the
    positions the bench reports are those the forward passes ran, padding included, not those of
    the texts batched all at once. Here chunks of 2 then 4 texts, padding to a multiple of 4."""
    checkpoint, recipe = encoder.random_encoder_checkpoint("tiny", tmp_path)
    tiny = DenseEncoder(checkpoint, recipe, "cpu", "float32", 24, fused_kernels=False, packed_sequences=False)
    tiny.first_chunk, tiny.pad_multiple = 2, 4
    texts = [" ".join(encoder.word(10 * k + i) for i in range(n)) for k, n in enumerate((1, 9, 2, 8, 3, 7))]
    assert [len(row) for row in tiny.tokenize(texts, "passage")] == [3, 11, 4, 10, 5, 9]
    tiny.embed(texts, "passage")
    # chunk [3, 11]: one batch (2 × 11 ≤ 24), padded to 12; chunk [4, 10, 5, 9], longest first:
    # [10, 9] (3 × 10 > 24) padded to 12, then [5, 4] padded to 8. All six at once would run
    # [11, 10], [9, 5], [4, 3]: 56 positions.
    assert tiny.stats["tokens"] == 42 and tiny.stats["positions"] == 2 * 12 + 2 * 12 + 2 * 8


def test_workload_fields_count_tokens_as_words_plus_two():
    long, longer = " ".join(["w"] * 509), " ".join(["w"] * 510)  # 511 and 512 tokens
    passages = ["a b c", "a b c", "a b c d", longer, long]  # 5, 5, 6, 512, 511 tokens
    fields = encoder._workload_fields(encoder.EncodeWorkload(5, 1), passages)
    assert fields["distinct_passages"] == 4
    assert fields["passage_tokens_median"] == 6.0
    assert fields["passage_tokens_mean"] == round((5 + 5 + 6 + 512 + 511) / 5, 1) == 207.8
    assert fields["passage_tokens_at_max_length"] == 1


def test_short_passages_have_three_words_and_queries_stay_near_twelve():
    passages, queries = encoder.EncodeWorkload(300, 500, median_passage_tokens=2, passage_sigma=1.0).texts()
    assert min(len(text.split()) for text in passages) == 3
    words = [len(query.split()) for query in queries]
    assert sum(6 <= n <= 24 for n in words) >= 0.95 * len(words)


def test_bench_encode_ratios_defaults_and_differences(monkeypatch):
    """The speed-ups, the CPU defaults and the largest embedding differences, with each path's
    timing and vectors made up here."""
    sizes, reference = [], np.zeros((2, 2), dtype=np.float32)
    timings = {
        "straightforward": ({"seconds": 6.0, "query_seconds": 1.0}, reference),
        "ours": (
            {"seconds": 2.0, "query_seconds": 4.0, "second_pass": {"seconds": 1.5}},
            np.array([[0.0, 0.1], [0.3, -0.5]], dtype=np.float32),
        ),
        "packed": (
            {"seconds": 1.0, "query_seconds": 0.5, "second_pass": {"seconds": 0.5}},
            np.array([[0.25, 0.0], [0.0, 0.125]], dtype=np.float32),
        ),
    }

    def run_path(encoder_, passages, queries, fast, peaks, second_pass=False):
        kind = "packed" if encoder_.packed_sequences else "ours" if fast else "straightforward"
        assert peaks == (None, 5e9)
        return timings[kind]

    def an_encoder(*args, packed_sequences=False, **kwargs):
        return SimpleNamespace(
            packed_sequences=packed_sequences, fused_kernels=False, model=lambda side: Layers()
        )

    monkeypatch.setattr(encoder, "measured_matmul_peak", lambda _d, size, _t: sizes.append(size) or 5e9)
    monkeypatch.setattr(encoder, "random_encoder_checkpoint", lambda shape, folder: (None, None))
    monkeypatch.setattr(encoder, "DenseEncoder", an_encoder)
    monkeypatch.setattr(encoder, "_described", lambda *args: {})
    monkeypatch.setattr(encoder, "_next_encoder", lambda previous, *a, **k: an_encoder(*a, **k))
    monkeypatch.setattr(encoder, "run_path", run_path)
    result = encoder.run_bench_encode(device="cpu", second_pass=True, packed_sequences=True)
    assert (result["speedup"], result["query_speedup"], result["speedup_second_pass"]) == (3.0, 0.25, 4.0)
    assert (result["speedup_packed"], result["speedup_packed_second_pass"]) == (6.0, 12.0)
    assert result["max_abs_difference"] == 0.5 and result["max_abs_difference_packed"] == 0.25
    # the CPU defaults the command's help gives: 2,000 passages, a tenth as many queries, a 1024³
    # product, 8,192 tokens a batch
    assert (result["workload"]["passages"], result["workload"]["queries"]) == (2000, 200)
    assert result["device"]["matmul_size"] == 1024 and sizes == [1024]
    assert result["max_batch_tokens"] == 8192 and result["straightforward_batch_size"] == 32


def test_the_corpus_path_rates_the_workloads_passages(clock, monkeypatch):
    passages = ["a b", "a b", "c d e", "f", "c d e"]  # shards of 2: {a b}, {c d e, f}, {c d e}
    fake = FakeEncoder(clock, [])

    def encode_corpus(cache, documents, count, encoder_, label):
        assert [text for _, text in documents] == passages and count == 5
        encoder_.stats["tokens"] += 4 + 5 + 3 + 5
        clock.advance(1.25)
        return SimpleNamespace(shards=3, encoded_passages=4)

    monkeypatch.setattr(corpus_path, "encode_corpus", encode_corpus)
    monkeypatch.setattr(corpus_path, "CorpusEmbeddings", lambda *args: SimpleNamespace(create=lambda _: None))
    result = corpus_path.time_corpus_path(fake, passages, 2, lambda n: 10 * n, (170.0, 340.0))
    assert result == {
        "shard_size": 2,
        "shards": 3,
        "passages_encoded": 4,
        "seconds": 1.25,
        "passages_per_second": 4.0,  # the workload's 5 passages, not the 4 encoded
        "tokens_per_second": 13.6,
        "model_flops_per_second": 170 / 1.25,
        "mfu_datasheet": 0.8,
        "mfu_measured": 0.4,
    }


# -- the listwise bench --------------------------------------------------------------------------------


class Backbone(torch.nn.Module):
    """40 embedding parameters, 12 others; 2 layers of 3 heads of 5 dimensions, hidden size 4."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(10, 4)
        self.layer = torch.nn.Linear(4, 3, bias=False)
        self.config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=3, head_dim=5, hidden_size=4)


def test_listwise_flops_count_query_heads_times_head_dim_causally():
    model = SimpleNamespace(backbone=Backbone())
    assert listwise.non_embedding_parameters(model) == 12
    # per token 2 × 12; attention 4 × 2 layers × 3 heads × 5 dims × n(n+1)/2 (heads × head dim is
    # not the hidden size here, as in Qwen3-0.6B: 16 × 128 against 1024)
    assert listwise.model_flops(model, [1, 4]) == (24 * 1 + 120 * 1) + (24 * 4 + 120 * 10) == 1440


def requests(*candidates: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(texts=("d",) * n) for n in candidates]


def test_a_listwise_paths_rates_percentiles_and_utilisation(monkeypatch):
    monkeypatch.setattr(listwise, "peak_memory", lambda _device: 7)
    model = SimpleNamespace(backbone=Backbone())
    per_query = [10.5, 20.25, 30.126, 40.0, 100.0]
    result = listwise._path_result(2.0, per_query, requests(3, 5), [1, 4], model, "cpu", (1440.0, None))
    assert result == PathResult(
        seconds=2.0,
        docs_per_second=4.0,  # 8 candidates
        tokens_per_second=2.5,
        ms_per_query_p50=30.13,
        ms_per_query_p95=88.0,  # 40 + 0.8 × (100 - 40), linear between the 4th and 5th
        peak_memory_bytes=7,
        model_flops_per_second=720.0,
        mfu_datasheet=0.5,
        mfu_measured=None,
    )


class FakeReranker:
    """Prompts of 2 tokens a candidate; scores as `scores_of` gives them."""

    def __init__(self, dtype=torch.float32, scores_of=None, **settings) -> None:
        self.backbone, self.dtype, self.queries_per_call = Backbone(), dtype, 2
        self.scores_of = scores_of or (lambda request: np.zeros(len(request.texts)))
        names = ("fused_rms_norm", "trim_last_layer", "compile_elementwise", "pad_multiple", "pack_blocks")
        self.settings = SimpleNamespace(**{name: settings.get(name) for name in names})
        self.attention = "sdpa"

    def _blocks(self, requests_):
        return [SimpleNamespace(input_ids=[0] * 2 * len(r.texts)) for r in requests_]

    def use_published_modules(self, on):
        pass

    def forget_documents(self):
        pass


def test_per_query_milliseconds_of_each_path(clock, monkeypatch):
    from rerank_eval.pipeline import score

    monkeypatch.setattr(listwise, "peak_memory", lambda _device: 0)
    model, three = FakeReranker(), requests(1, 1, 1)
    durations = iter([0.125, 0.25, 0.5])

    def reference_style_scores(model_, request):
        clock.advance(next(durations))
        return np.zeros(1), 0

    monkeypatch.setattr(listwise, "reference_style_scores", reference_style_scores)
    reference, _ = listwise.run_reference(model, three, torch.device("cpu"), (None, None))
    assert reference.seconds == 0.875
    assert (reference.ms_per_query_p50, reference.ms_per_query_p95) == (250.0, 250 + 0.9 * 250)

    chunk_seconds = iter([0.25, 0.5])  # two queries a call: [q0, q1] then [q2]

    def score_with_backoff(model_, chunk, prepared):
        clock.advance(next(chunk_seconds))
        return [np.zeros(1) for _ in chunk]

    monkeypatch.setattr(score, "prepared_ahead", lambda model_, chunks: ((c, None) for c in chunks))
    monkeypatch.setattr(score, "score_with_backoff", score_with_backoff)
    ours, _ = listwise.run_ours(model, three, torch.device("cpu"), (None, None))
    assert ours.seconds == 0.75
    assert (ours.ms_per_query_p50, ours.ms_per_query_p95) == (125.0, 125 + 0.9 * 375)


def test_kendall_tau_is_the_mean_over_queries():
    same = np.array([1.0, 2.0, 3.0])
    ours, other = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])  # 1 of 6 pairs swapped
    assert listwise.kendall_tau([same, ours], [same, other]) == pytest.approx((1 + (5 - 1) / 6) / 2)


def test_bench_ratio_score_difference_rank_agreement_and_defaults(monkeypatch):
    sizes = []
    reversed_query = "q3"  # float32 ranks this query's candidates in reverse

    def random_reranker(shape, device_, dtype, folder, **settings):
        if dtype == torch.float32:
            return FakeReranker(
                dtype, lambda r: -np.arange(3.0) if r.qid == reversed_query else np.arange(3.0)
            )
        return FakeReranker(dtype, lambda r: np.arange(3.0), **settings)

    def run_ours(model, requests_, device_, peaks):
        result = PathResult(2.0, 0, 0, 0, 0, 0, 0, None, None)
        return result, [model.scores_of(r) for r in requests_]

    def run_reference(model, requests_, device_, peaks):
        # the reference-style scores differ from ours by 0.25 but in one query by 0.75
        off = [np.array([0.0, 0.0, 0.75 if r.qid == "q1" else 0.25]) for r in requests_]
        return PathResult(5.0, 0, 0, 0, 0, 0, 0, None, None), [np.arange(3.0) + o for o in off]

    monkeypatch.setattr(listwise, "measured_matmul_peak", lambda _d, size, _t: sizes.append(size) or 1e9)
    monkeypatch.setattr(listwise, "random_reranker", random_reranker)
    monkeypatch.setattr(listwise, "run_ours", run_ours)
    monkeypatch.setattr(listwise, "run_reference", run_reference)
    monkeypatch.setattr(listwise.Workload, "requests", lambda self: [
        SimpleNamespace(qid=f"q{i}", texts=("d",) * 3) for i in range(self.queries)
    ])  # fmt: skip
    result = listwise.run_bench("short", "tiny", 10, 3, device="cpu", dtype="bfloat16")
    assert result["speedup"] == 2.5 and result["max_score_difference"] == 0.75
    # the float32 run covers the first 8 of the 10 queries; one of them reversed: tau (7 - 1) / 8
    assert (result["kendall_tau_vs_float32"], result["kendall_tau_queries"]) == (0.75, 8)
    assert result["device"]["matmul_size"] == 1024 and sizes == [1024]
    defaults = listwise.run_bench("short", "tiny", device="cpu", compare_float32=False)
    assert defaults["workload"]["queries"] == 4 and defaults["kendall_tau_vs_float32"] is None


def test_document_lengths_are_drawn_around_the_presets_size():
    lengths = [
        len(text.split()) for r in listwise.Workload("medium", 10, 40, 150).requests() for text in r.texts
    ]
    assert 130 <= np.median(lengths) <= 170
    assert np.percentile(lengths, 90) < 150 * 2.2  # log-normal, σ 0.5: the 90th percentile ≈ 1.9×


# -- the tables -----------------------------------------------------------------------------------------


def cells(table) -> dict[str, list[str]]:
    """The table's rows by label."""
    columns = [list(column.cells) for column in table.columns]
    return {row[0]: list(row[1:]) for row in zip(*columns)}


def bench_result(ours_measured: float = 0.5) -> dict:
    path = {
        "docs_per_second": 1234.56, "tokens_per_second": 98765.4, "ms_per_query_p50": 12.34,
        "ms_per_query_p95": 45.67, "peak_memory_bytes": 3 * 2**20, "mfu_datasheet": 0.1234,
        "mfu_measured": 1.0,
    }  # fmt: skip
    ours = {
        **path, "docs_per_second": 2000.4, "ms_per_query_p95": 20.0, "peak_memory_bytes": 1536 * 2**20,
        "mfu_datasheet": None, "mfu_measured": ours_measured,
    }  # fmt: skip
    return {
        "workload": {"preset": "short", "queries": 2, "candidates": 20, "median_doc_tokens": 20},
        "device": {"name": "cpu", "matmul_dtype": "float32", "measured_matmul_flops": 1.5e12},
        "model": {"shape": "tiny", "dtype": "float32", "attention": "sdpa", "fused_rms_norm": True,
                  "trim_last_layer": True, "compile_elementwise": False, "pack_blocks": False,
                  "pad_multiple": 1},
        "reference_style": path,
        "ours": ours,
        "speedup": 2.5,
        "max_score_difference": 1.5e-5,
        "kendall_tau_vs_float32": 0.98765,
        "second_pass": {"speedup": 1.75, "ours": {"docs_per_second": 3000}, "reference_style":
                        {"docs_per_second": 1500}},
    }  # fmt: skip


def test_the_bench_table_cells_and_caption():
    table = bench_table(bench_result())
    assert (
        table.title == "bench short: 2 queries × 20 candidates, median 20 tokens/doc; tiny (float32) on cpu"
    )
    assert cells(table) == {
        "docs/s": ["1,235", "2,000"],
        "tokens/s": ["98,765", "98,765"],
        "ms/query p50": ["12.3", "12.3"],
        "ms/query p95": ["45.7", "20.0"],
        "peak memory (MiB)": ["3", "1,536"],
        "MFU vs datasheet": ["12.3%", "–"],
        "MFU vs measured matmul": ["100.0%", "50.0%"],  # exactly the peak is not above it
    }
    caption = str(table.caption)
    assert "speed-up 2.50×; max score difference 1.50e-05; Kendall tau vs float32 0.9877" in caption
    assert "measured float32 matmul 1.50 TFLOP/s" in caption
    assert "second pass: speed-up 1.75×, ours 3,000 docs/s, reference-style 1,500" in caption
    assert PEAK_MEASURED_LOW not in caption


def test_a_measured_mfu_above_one_in_either_path_is_starred_and_explained():
    table = bench_table(bench_result(ours_measured=1.01))
    assert cells(table)["MFU vs measured matmul"] == ["100.0%", "101.0% *"]
    assert str(table.caption).endswith(PEAK_MEASURED_LOW)


def encode_result() -> dict:
    straightforward = {
        "dtype": "float32", "passages_per_second": 500.4, "tokens_per_second": 60000.6, "tokens": 280000,
        "passages_encoded": 2000, "padded_positions": 300000, "queries_per_second": 800.2,
        "mfu_datasheet": None, "mfu_measured": 0.1, "peak_gpu_memory_bytes": None,
    }  # fmt: skip
    ours = {
        **straightforward, "passages_encoded": 1900, "tokens": 266000, "padded_positions": 270000,
        "mfu_datasheet": 0.25, "peak_gpu_memory_bytes": 2 * 2**20,
        "second_pass": {"passages_per_second": 1234.4, "mfu_datasheet": None, "mfu_measured": 0.3},
        "corpus_path": {"shard_size": 1024, "passages_per_second": 999.6, "mfu_datasheet": 0.25,
                        "mfu_measured": 0.5},
    }  # fmt: skip
    return {
        "workload": {"passages": 2000, "distinct_passages": 1900, "passage_tokens_median": 120.0,
                     "queries": 200},
        "model": {"shape": "tiny", "non_embedding_parameters": 1_960_000, "fused_kernels": False},
        "device": {"name": "cpu", "matmul_dtype": "float32", "measured_matmul_flops": 2.5e11},
        "max_batch_tokens": 8192, "straightforward_batch_size": 32,
        "straightforward": straightforward, "ours": ours,
        "ours_packed": {**ours, "padded_positions": 266000},
        "speedup": 3.456, "query_speedup": 1.5, "speedup_second_pass": 2.25,
        "max_abs_difference": 1e-7, "speedup_packed": 4.0, "max_abs_difference_packed": 2e-7,
    }  # fmt: skip


def test_the_encode_table_cells_title_and_caption():
    table = encode_table(encode_result())
    rows = cells(table)
    assert rows["passages encoded"] == ["2,000", "1,900", "1,900"]
    assert rows["positions run (padding included)"] == ["300,000", "270,000", "266,000"]
    assert rows["passages/s"] == ["500", "500", "500"] and rows["tokens/s (real)"] == ["60,001"] * 3
    assert rows["MFU vs datasheet bf16"] == ["–", "25.0%", "25.0%"]
    assert rows["peak GPU memory (MiB)"] == ["–", "2", "2"]
    assert "(2.0M non-embedding parameters)" in table.title and "tokens, 5.0% repeated" in table.title
    caption = str(table.caption)
    assert "speed-up 3.46× (queries 1.50×); max abs embedding difference 1.00e-07" in caption
    assert "measured float32 matmul 0.25 TFLOP/s" in caption
    assert "second pass: ours 1,234 passages/s, MFU vs datasheet –, speed-up 2.25×" in caption
    assert "corpus path (shards of 1,024, written): 1,000 passages/s, MFU vs datasheet 25.0%" in caption
    assert "4.00×, max abs difference 2.00e-07" in str(table.columns[3].header)


def test_fake_result_dicts_carry_every_row_the_tables_print():
    """The made-up results above have the fields real ones have (so the table tests test tables)."""
    from rerank_eval.bench.table import ENCODE_ROWS, ROWS

    assert {key for _, key, _ in ROWS} <= set(bench_result()["ours"])
    assert {key for _, key, _ in ENCODE_ROWS} <= set(encode_result()["ours"])


def test_bench_index_refuses_fewer_than_a_thousand_documents():
    from typer.testing import CliRunner

    from rerank_eval.cli import app

    result = CliRunner().invoke(app, ["bench-index", "--docs", "999"])
    assert result.exit_code == 2 and "at least 1,000, got '999'" in result.output
