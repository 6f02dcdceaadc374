"""``embedopt`` command line: embed, distill, finetune, eval, export, serve, indexes and migration, drift, cache,
specs, models, costs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._files import atomic_file
from .errors import CacheError, ConfigError, EmbedOptError
from .quantization import PRECISIONS

_MODEL_HELP = ("model spec: minilm (default), st:NAME_OR_FOLDER, static:FOLDER, static:distill[:SOURCE], "
               "openai:MODEL, voyage:MODEL, or a folder (`embedopt specs` lists them all)")


_JOIN_HELP = ("how a document's title and text become the text embedded: space (default: 'title text', BEIR's), "
              "colon ('title: text'), newline, none (the text alone), or a format string with {title} and {text}")

_CACHE_HELP = ("cache tiers, fastest first: memory[:SIZE], sqlite[:PATH], redis://HOST:PORT/DB, rediss://...; "
               "comma-separated")


def _embedder(model: str, **options: Any) -> Any:
    """How every command builds an Embedder: from a model spec, through the registry of specs."""
    from .embedder import Embedder

    return Embedder.from_spec(model, **options)


def _writable(out: Path, what: str) -> None:
    """Refuse, before any work, an output path that cannot be created: under a file, or in a read-only folder."""
    for parent in (out.parent, *out.parent.parents):
        if parent.exists():
            break
    if not parent.is_dir():
        raise ConfigError(f"{what} {str(out)!r} is under {str(parent)!r}, which is a file, not a folder; choose "
                          "another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {str(out)!r}: the folder {str(parent)!r} is not writable; choose "
                          "another path")


def _output_file(path: str, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """An output file path checked before the work: the suffix, not a folder, its folder creatable and writable."""
    out = Path(path)
    if suffixes and out.suffix not in suffixes:
        raise ConfigError(f"{what} must end in {' or '.join(suffixes)}, got {path!r}")
    if out.is_dir():
        example = out / ("out" + (suffixes[0] if suffixes else ".json"))
        raise ConfigError(f"{what} {path!r} is a folder; give a file path (e.g. {str(example)!r})")
    _writable(out, what)
    return out


def _output_folder(path: str | os.PathLike[str], what: str) -> Path:
    """An output folder path checked before the work: not a file, its parent creatable and writable."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {str(out)!r} is a file; give a folder path")
    _writable(out, what)
    return out


_PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def _plot_output(path: str, feature: str) -> Path:
    """A plot path checked before the work: matplotlib installed, a format it writes, a writable place."""
    from ._extras import require

    require("matplotlib", extra="eval", feature=feature)
    if Path(path).suffix.lower() not in _PLOT_FORMATS:
        raise ConfigError(f"--plot must end in one of {', '.join(_PLOT_FORMATS)}, got {path!r}")
    return _output_file(path, "--plot")


def _read_texts(source: str, field: str) -> tuple[list[str], list[Any]]:
    """Texts and their ids: a .jsonl file (``field``, ids from ``_id``/``id``), or lines of text (ids = line numbers).

    Blank lines in plain text are skipped (their line numbers are not ids); in .jsonl a missing or empty field
    is an error naming the line. Binary input (not UTF-8, or holding NUL bytes) is refused.
    """
    try:
        if source == "-":
            text = sys.stdin.read()
            is_jsonl = False
        else:
            path = Path(source)
            if not path.exists():
                raise ConfigError(f"input file {source!r} does not exist")
            if not path.is_file():
                raise ConfigError(f"input {source!r} is not a file; give a .jsonl file or a text file (one text a "
                                  "line), or - for stdin")
            text = path.read_text(encoding="utf-8")
            is_jsonl = path.suffix == ".jsonl"
    except UnicodeDecodeError as exc:
        raise ConfigError(f"input {source!r} is not UTF-8 text (byte {exc.start}): a binary file? Give a text file "
                          "(one text a line) or .jsonl; convert other encodings first (iconv -t UTF-8)") from exc
    if "\x00" in text:
        raise ConfigError(f"input {source!r} holds NUL bytes (a binary file?); give a text file (one text a line) "
                          "or .jsonl")
    lines = text.splitlines()
    texts: list[str] = []
    ids: list[Any] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{source} line {n} is not JSON: {exc}") from exc
            value = row.get(field) if isinstance(row, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{source} line {n} has no text in field {field!r}; choose the field with --field")
            texts.append(value)
            ids.append(row.get("_id", row.get("id", n)))
        else:
            texts.append(line)
            ids.append(n)
    return texts, ids


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (pip install \"embedopt[ray]\"): ADDRESS (auto, HOST:6379, ray://HOST:10001), "
                        "or none for $RAY_ADDRESS / a local `ray start` / a new local cluster")
    p.add_argument("--workers", type=int, default=2, help="--ray: embedding actors (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="--ray: CPUs each actor takes (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="--ray: GPUs each actor takes (default 0)")


def _ray_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"address": args.ray or None, "workers": args.workers, "num_cpus": args.cpus_per_worker,
            "num_gpus": args.gpus_per_worker, "progress": not args.no_progress}


def _cmd_embed_ray(args: argparse.Namespace) -> int:
    from .distributed import embed_files

    report = embed_files(args.input, args.output, model=args.model, input_type=args.input_type, dim=args.dim,
                         precision=args.precision, normalize=not args.no_normalize, cache=args.cache or None,
                         calibration_path=args.calibration, format=args.shard_format, text_field=args.field,
                         id_field=args.id_field, batch_size=args.batch_size, **_ray_options(args))
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _cmd_embed_ray(args)
    out = _output_file(args.output, "--output", (".npy", ".jsonl"))
    texts, ids = _read_texts(args.input, args.field)
    embedder = _embedder(args.model, dim=args.dim, precision=args.precision, normalize=not args.no_normalize,
                         calibration_path=args.calibration, show_progress=False if args.no_progress else None,
                         cache=args.cache or None)
    vectors = embedder.embed(texts, args.input_type)
    if out.suffix == ".npy":
        with atomic_file(out, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    else:
        with atomic_file(out, "w") as f:
            for i, vec in zip(ids, vectors, strict=True):
                f.write(json.dumps({"id": i, "vector": vec.tolist()}) + "\n")
    fp = embedder.fingerprint(args.input_type)
    print(f"embedded {len(texts)} texts -> {out} shape={tuple(vectors.shape)} dtype={vectors.dtype} "
          f"fingerprint={fp.id}", file=sys.stderr)
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from ._files import cache_dir
    from .providers._distill import cached_distill, distill

    pca = None if args.pca_dims in ("none", "full") else int(args.pca_dims)
    if args.train is None:
        print(distill(args.model, args.output, pca_dims=pca, device=args.device))
        return 0
    from .tools.finetune import STATIC

    source = cached_distill(args.model, pca_dims=pca, device=args.device)
    out = args.output or cache_dir() / "static" / f"{source.name}-tuned-{Path(args.train).resolve().stem}"
    return _finetune(args, STATIC, base=f"static:{source}", output=out, compare=f"st:{args.model}")


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .tools.finetune import TRANSFORMER

    return _finetune(args, TRANSFORMER, base=args.model, output=args.output, compare=None)


def _finetune(args: argparse.Namespace, defaults: Any, *, base: str, output: str | os.PathLike[str],
              compare: str | None) -> int:
    from .tools.finetune import LLMQueryWriter, finetune, with_overrides

    _output_folder(output, "-o/--output")

    settings = with_overrides(defaults, epochs=args.epochs, batch_size=args.batch_size,
                              learning_rate=args.learning_rate, max_seq_length=getattr(args, "max_seq_length", None),
                              per_doc=args.per_doc, max_pairs=args.max_pairs, test_fraction=args.test_fraction,
                              seed=args.seed,
                              matryoshka_dims=tuple(int(d) for d in args.matryoshka_dims.split(","))
                              if args.matryoshka_dims else None)
    llm = None
    if args.llm_model:
        llm = LLMQueryWriter(args.llm_model, base_url=args.llm_base_url, queries_per_doc=settings.per_doc)
    elif args.llm_base_url:
        raise ConfigError("--llm-base-url needs --llm-model: the chat model's name on that endpoint")
    report = finetune(args.documents if args.train is None else args.train, output, base=base, settings=settings,
                      llm=llm, eval_dims=[int(d) for d in args.dims.split(",")] if args.dims else None,
                      reference=compare, cache=None if args.cache == "none" else args.cache,
                      device=args.device, show_progress=not args.no_progress,
                      log=lambda m: print(m, file=sys.stderr))
    print(report.table())
    print(f"model: {report.output}\nreport: {Path(report.output) / 'finetune-report.json'}\n"
          f"It is a new embedding space (its own fingerprint and cache entries). Move an index to it with:\n"
          f"  embedopt migrate plan ROOT -m {report.output}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.fusion:
        from .tools.hybrid import run_fusion_eval

        fe = run_fusion_eval(args.dataset, model=args.models.split(",")[0], fit_fraction=args.fit_fraction,
                             cache=None if args.cache == "none" else args.cache, show_progress=not args.no_progress,
                             log=lambda m: print(m, file=sys.stderr))
        print(fe.table())
        print(f"results: {fe.to_json(args.output)}; use fusion=\"{fe.to_dict()['fusion_spec']}\"", file=sys.stderr)
        return 0
    from .tools.evaluate import run_grid
    from .tools.report import plot, table

    def floats(text: str) -> list[float | None]:
        try:
            return [None if v in ("none", "0", "") else float(v) for v in text.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--oversample takes numbers or 'none', comma-separated, got {text!r}") from exc

    _output_file(args.output, "-o/--output")
    if args.plot:
        _plot_output(args.plot, "embedopt eval --plot")
    result = run_grid(args.dataset, models=args.models.split(","),
                      dims=[int(d) for d in args.dims.split(",")] if args.dims else None,
                      precisions=args.precisions.split(","), oversample=floats(args.oversample),
                      cache=None if args.cache == "none" else args.cache, rerank=args.rerank,
                      rerank_queries=args.rerank_queries, show_progress=not args.no_progress, join=args.join,
                      log=lambda m: print(m, file=sys.stderr))
    table(result, use_rich=False if args.plain else None)
    out = result.to_json(args.output)
    print(f"results: {out}  ({result.total_seconds}s in all)", file=sys.stderr)
    if args.plot:
        print(f"plot: {plot(result, args.plot)}", file=sys.stderr)
    return 0


def _cmd_drift_report(args: argparse.Namespace) -> int:
    from .drift import DriftMonitor, monitors
    from .tools.report import plot_history

    if args.plot:
        _plot_output(args.plot, "embedopt drift report --plot")
    names = [args.monitor] if args.monitor else monitors(args.db)
    if not names:
        print("no drift history recorded yet", file=sys.stderr)
        return 0
    for name in names:
        monitor = DriftMonitor(name, db=args.db)
        history = monitor.history()
        keys = [k for k in ("mean_norm", "centroid_shift", "spread", "low_top1_share")
                if any(h.get(k) is not None for h in history)]
        keys += sorted({k for h in history for k in h if k.startswith("golden_")})
        print(f"{name}: {len(history)} batches, {sum(len(h['alerts']) for h in history)} alerts")
        print("  batch  " + "  ".join(f"{k:>14}" for k in keys) + "  alerts")
        for h in history:
            cells = "  ".join(f"{h[k]:>14.5g}" if h.get(k) is not None else f"{'-':>14}" for k in keys)
            print(f"  {h['batch']:>5}  {cells}  {', '.join(a['metric'] for a in h['alerts'])}")
        if args.plot:
            out = Path(args.plot) if len(names) == 1 else Path(args.plot).with_stem(f"{Path(args.plot).stem}-{name}")
            print(f"plot: {plot_history(history, out, title=f'drift: {name}')}", file=sys.stderr)
        monitor.close()
    return 0


def _cmd_export_static(args: argparse.Namespace) -> int:
    from .providers.static import StaticProvider
    from .specs import load_provider
    from .tools.export_static import export_static

    _output_folder(args.output, "-o/--output")
    provider = load_provider(args.model)
    if not isinstance(provider, StaticProvider):
        raise ConfigError(f"export static needs a static model (-m static:FOLDER or static:distill), not {args.model!r}")
    m = export_static(provider, args.output, format=args.format, int8=args.int8)
    space = m["space"]
    print(f"{args.output}: {'same space as the source' if space['same_as_source'] else 'its own space'} "
          f"(revision {space['revision']}); model.onnx {m['files']['model.onnx']['bytes']:,} bytes; "
          f"largest difference from the source {m['verification']['max_abs_diff']:.2g}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from .tools.export_onnx import export_onnx

    _output_folder(args.output, "-o/--output")
    m = export_onnx(args.model, args.output, quantize=args.quantize, scheme=args.scheme, optimize=args.optimize)
    print(json.dumps(m, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run_args

    return run_args(args)


def _cmd_index_build(args: argparse.Namespace) -> int:
    from .eval import load_beir
    from .versioning import VersionedIndex

    _output_folder(args.root, "root")
    ds = load_beir(args.dataset, join=args.join)
    titles = [{"title": d["title"]} for d in ds.corpus.values()]
    vi = VersionedIndex.build(args.root, args.model, ds.doc_texts(), ds.doc_ids, metadatas=titles, dim=args.dim,
                              cache=None if args.cache == "none" else args.cache)
    print(json.dumps({"root": str(vi.root), "live": vi.live, "documents": len(ds.doc_ids)}, indent=2))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from . import versioning as v

    if args.action in ("plan", "start") and not args.model:
        raise ConfigError(f"migrate {args.action} needs --model (the model to migrate to)")
    cache = None if args.cache == "none" else args.cache
    if args.action == "plan":
        result = v.plan(args.root, args.model, dim=args.dim)
    elif args.action == "start" and args.ray is not None:
        from .distributed import migrate

        result = migrate(args.root, args.model, dim=args.dim, cache=cache, batch_size=args.batch_size,
                         **_ray_options(args))
    elif args.action == "start":
        result = v.start(args.root, args.model, dim=args.dim, batch_size=args.batch_size, cache=cache,
                         show_progress=not args.no_progress)
    elif args.action == "status":
        result = v.status(args.root)
    elif args.action == "shadow":
        if not args.queries:
            raise ConfigError("migrate shadow needs --queries: a BEIR-format folder whose queries to replay")
        from .eval import load_beir

        ds = load_beir(args.queries)
        qids = ds.query_ids[: args.sample]
        result = v.shadow(args.root, {q: ds.queries[q] for q in qids}, qrels=ds.qrels)
    elif args.action == "cutover":
        result = v.cutover(args.root, force=args.force)
    else:
        result = v.rollback(args.root)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_train_reranker(args: argparse.Namespace) -> int:
    from .tools.train_reranker import TrainSettings, cached_cross_encoder

    settings = TrainSettings(max_queries=args.queries, negatives=args.negatives, epochs=args.epochs,
                             max_length=args.max_length)
    print(cached_cross_encoder(args.dataset, base=args.model, settings=settings, show_progress=not args.no_progress))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .quantization import bytes_per_vector

    embedder = _embedder(args.model, normalize=not args.no_normalize)
    info = embedder.provider.info
    report = {
        "provider": info.provider,
        "model": info.model,
        "revision": info.revision,
        "kind": info.kind,
        "native_dim": info.dim,
        "max_tokens": info.max_tokens,
        "price_per_1m_tokens": info.price_per_1m_tokens,
        "prompts": info.prompts,
        "fingerprints": {t: embedder.fingerprint(t).id for t in ("query", "document")},
        "space_id": embedder.fingerprint("document").space_id,
        "bytes_per_vector": {p: bytes_per_vector(info.dim, p) for p in ("float32", "int8", "binary")},
    }
    from .providers.onnx import OnnxProvider

    if isinstance(embedder.provider, OnnxProvider):  # which space the export serves in, and why
        m = embedder.provider.manifest
        report["onnx"] = {
            "precision": m["precision"],
            "scheme": (m.get("quantization") or {}).get("scheme"),
            "space": ("shared: the source model's space (fp32, probe cosine >= 0.99999)" if m["space"] == "shared"
                      else "own: a space of its own (int8, or fp32 below the probe bar); migrate indexes to it"),
            "source_revision": m["source"]["revision"],
            "probe_min_cosine": (m.get("probe") or {}).get("min_cosine"),
            "device": embedder.provider.device,
            "fp16": embedder.provider.fp16,
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:20} {value}")
    return 0


def _open_cache(spec: str) -> Any:
    from .specs import open_cache

    return open_cache(spec)


def _cmd_cache_stats(args: argparse.Namespace) -> int:
    cache = _open_cache(args.cache)
    report: dict[str, Any] = {}
    for name, tier in zip(cache.names, cache.tiers, strict=True):
        report[name] = {"tier": repr(tier), **tier.usage(), "fingerprints": tier.usage_by_fingerprint()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, entry in report.items():
        print(f"{name:8} {entry['entries']:>10,} entries {entry['bytes'] / 1e6:>10.2f} MB   {entry['tier']}")
        for fp, n in sorted(entry.get("fingerprints", {}).items()):
            print(f"{'':8} {n:>10,}   {fp}")
    return 0


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    cache = _open_cache(args.cache)
    for name, tier in zip(cache.names, cache.tiers, strict=True):
        removed = tier.clear(args.fingerprint)
        what = f" of {args.fingerprint}*" if args.fingerprint else ""
        print(f"{name}: removed {removed} entries{what}")
    return 0


def _cmd_cache_warm(args: argparse.Namespace) -> int:
    texts, _ = _read_texts(args.input, args.field)
    cache = _open_cache(args.cache)
    embedder = _embedder(args.model, cache=cache, show_progress=False if args.no_progress else None)
    embedder.embed_full(texts, args.input_type)
    s = embedder.stats
    down = [name for name, t in cache.tier_stats().items()
            if t.get("errors") or t.get("skipped") or t.get("state") != "closed"]
    if down:
        raise CacheError(f"cache warm embedded {s.unique} unique texts but could not store them in "
                         f"{', '.join(down)} (the tier failed or is down); fix it and run cache warm again",
                         tier=down[0])
    print(f"warmed {s.unique} unique texts as {args.input_type}s: {s.computed} computed, {s.cache_hits} already "
          f"cached; fingerprint={embedder.fingerprint(args.input_type).id}", file=sys.stderr)
    return 0


def _cmd_specs(args: argparse.Namespace) -> int:
    from .specs import cache_entries, option_names, provider_entries

    providers: list[dict[str, Any]] = [
        {"prefix": e.prefix + ":", "aliases": list(e.aliases), "example": e.example, "summary": e.summary,
         "key_env": e.key_env, "options": option_names(e)} for e in provider_entries().values()]
    tiers: list[dict[str, Any]] = [{"schemes": list(e.schemes), "example": e.example, "summary": e.summary}
                                   for e in dict.fromkeys(cache_entries().values())]
    if args.json:
        print(json.dumps({"models": providers, "caches": tiers}, indent=2))
        return 0
    print("model specs:")
    for p in providers:
        names = ", ".join([p["prefix"], *p["aliases"]])
        key = f"  (key: ${p['key_env']})" if p["key_env"] else ""
        print(f"  {names:24} {p['summary']}{key}\n  {'':24} e.g. {p['example']}; options: {', '.join(p['options'])}")
    print("cache specs (comma-separated, fastest first; 'default' = memory,sqlite):")
    for t in tiers:
        print(f"  {', '.join(t['schemes']):24} {t['summary']}\n  {'':24} e.g. {t['example']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .catalog import CATALOG, recommend

    rows = [(c, "") for c in CATALOG] if args.use_case is None else recommend(args.use_case)
    if args.json:
        print(json.dumps([{"name": c.name, "provider": c.provider, "kind": c.kind, "dim": c.dim,
                           "max_tokens": c.max_tokens, "price_per_1m_tokens": c.price_per_1m_tokens,
                           "matryoshka_dims": list(c.matryoshka_dims), "languages": c.languages,
                           "use_cases": list(c.use_cases), "reason": why or None} for c, why in rows], indent=2))
        return 0
    print(f"{'model':48} {'kind':11} {'dim':>5} {'context':>8} {'$/1M tok':>9}  {'Matryoshka':18} languages")
    for c, why in rows:
        price = f"{c.price_per_1m_tokens:.2f}" if c.kind == "api" else "self"
        context = f"{c.max_tokens:,}" if c.max_tokens else "-"
        dims = ",".join(map(str, c.matryoshka_dims)) or "-"
        print(f"{c.name:48} {c.kind:11} {c.dim:>5} {context:>8} {price:>9}  {dims:18} {c.languages}")
        if why:
            print(f"{'':4}{why}")
    return 0


def _cmd_costs(args: argparse.Namespace) -> int:
    from .catalog import card
    from .costs import CostLedger, estimate

    if args.estimate:
        entry = card(args.model)
        price = args.price if args.price is not None else (entry.price_per_1m_tokens if entry else None)
        if price is None:
            raise ConfigError(f"no catalog price for {args.model!r}; pass --price (USD per 1M tokens)")
        figures = estimate(requests_per_day=args.requests_per_day, tokens_per_request=args.tokens_per_request,
                           price_per_1m_tokens=price, instance_usd_per_hour=args.instance_usd_per_hour,
                           instance_tokens_per_second=args.instance_tokens_per_second,
                           cache_hit_rate=args.cache_hit_rate)
        if args.json:
            print(json.dumps({"model": args.model, "price_per_1m_tokens": price, **figures}, indent=2))
            return 0
        api, on, busy = (figures["api_usd_per_day"], figures["self_hosted_always_on_usd_per_day"],
                         figures["self_hosted_busy_only_usd_per_day"])
        print(f"workload: {args.requests_per_day:,.0f} requests/day x {args.tokens_per_request:,.0f} tokens, "
              f"{args.cache_hit_rate:.0%} cache hits = {figures['tokens_per_day']:,.0f} tokens/day")
        print(f"API {args.model} at ${price}/1M tokens:        ${api:,.2f}/day  ${api * 30:,.2f}/month")
        print(f"self-hosted, always on at ${args.instance_usd_per_hour}/h:   ${on:,.2f}/day  ${on * 30:,.2f}/month")
        print(f"self-hosted, billed busy hours only:  ${busy:,.2f}/day  "
              f"({figures['self_hosted_busy_hours_per_day']:.2f} h at {args.instance_tokens_per_second:,.0f} tokens/s)")
        cheaper = "the API" if api < on else "self-hosting"
        print(f"cheaper against an always-on instance: {cheaper}; break-even at "
              f"{figures['breakeven_tokens_per_day_vs_always_on']:,.0f} tokens/day")
        return 0
    if not args.ledger:
        raise ConfigError("give a ledger file (CostLedger.to_json(path)) or --estimate")
    path = Path(args.ledger)
    if not path.is_file():
        raise ConfigError(f"ledger file {args.ledger!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"it holds a JSON {type(data).__name__}, not an object")
        ledger = CostLedger.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{args.ledger} is not a cost ledger export ({exc}); write one with "
                          "CostLedger.to_json(path)") from exc
    if args.json:
        print(ledger.to_json())
        return 0
    print(f"{'route':56} {'kind':11} {'requests':>9} {'failed':>7} {'tokens':>12} {'USD':>10}")
    for name, t in ledger.routes.items():
        print(f"{name:56} {t.kind:11} {t.requests:>9,} {t.failures:>7,} {t.tokens:>12,} {t.usd:>10.4f}")
    print(f"{'total':56} {'':11} {'':>9} {'':>7} {'':>12} {ledger.total_usd:>10.4f}")
    print(f"cache: {ledger.cache_hits:,} hits saved {ledger.cache_tokens_saved:,} tokens, "
          f"${ledger.cache_usd_saved:.4f}")
    return 0


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm-model", default=None, help="write training queries with this chat model (any "
                   "OpenAI-compatible endpoint; key from OPENAI_API_KEY) instead of the heuristic")
    p.add_argument("--llm-base-url", default=None, help="the endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--per-doc", type=int, default=None, help="pairs (or LLM queries) per document (default 2)")
    p.add_argument("--max-pairs", type=int, default=None, help="train on at most this many pairs (default 6000)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--matryoshka-dims", default=None, help="dims the loss trains (default: native and 768, 512, "
                   "256, 128, 64 below it)")
    p.add_argument("--test-fraction", type=float, default=None, help="documents held out (default 0.2)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dims", default=None, help="dims to report (default: native, 256, 128, 64)")
    p.add_argument("--cache", default="sqlite", help=_CACHE_HELP + " for the evaluation (default: sqlite)")
    p.add_argument("--no-progress", action="store_true")


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line that says where the help is (exit 2)."""

    def error(self, message: str) -> NoReturn:
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)  # user input may hold breaks
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedopt", description="Cheap, fast, safe-to-change embeddings.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed a file (or stdin) into .npy or .jsonl; with --ray, jsonl/parquet files "
                       "into a folder of shards on a Ray cluster")
    p.add_argument("input", nargs="?", default="-", help="a .jsonl file, a text file (one text a line), or - for stdin")
    p.add_argument("-o", "--output", required=True, help="where to write: .npy (array) or .jsonl (id + vector); "
                   "with --ray, a folder of shards")
    p.add_argument("-m", "--model", default="minilm", help=_MODEL_HELP)
    p.add_argument("--input-type", choices=("document", "query"), default="document")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension (default: native)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--calibration", help="calibration file for int8/uint8 (see Calibration.save)")
    p.add_argument("--field", default="text", help="the text field of .jsonl input (default: text)")
    p.add_argument("--no-normalize", action="store_true", help="keep the model's raw vector lengths")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cache", default=os.environ.get("EMBEDOPT_CACHE"), help=_CACHE_HELP + " (default: none)")
    _add_ray_options(p)
    p.add_argument("--shard-format", choices=("parquet", "npy"), default="parquet",
                   help="--ray: -o is a folder of shards in this format (default parquet)")
    p.add_argument("--id-field", default=None, help="--ray: the id column (default: _id or id)")
    p.add_argument("--batch-size", type=int, default=512, help="--ray: rows per actor call, and per shard")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("distill", help="distil a static model2vec model from a sentence-transformers model")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="source model: a hub id (packaged copies are used offline) or a folder")
    p.add_argument("-o", "--output", default=None, help="folder to write (default: embedopt's cache)")
    p.add_argument("--pca-dims", default="256", help="output dimension after PCA, or 'none' to keep the source's")
    p.add_argument("--device", default=None)
    p.add_argument("--train", default=None, metavar="DOCUMENTS",
                   help="then tune the static model on pairs made from these unlabeled documents (as finetune "
                        "does) and report its quality and speed against the source transformer")
    _add_training_options(p)
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("finetune", help="fine-tune a sentence-transformers model on unlabeled documents and report "
                       "NDCG@10 before and after on a held-out split")
    p.add_argument("documents", help="a BEIR-format folder, a .jsonl file, or a folder of .txt/.md/.rst files")
    p.add_argument("-o", "--output", required=True, help="the folder to write the fine-tuned model to")
    p.add_argument("-m", "--model", default="minilm", help="the model to start from: minilm, st:NAME_OR_FOLDER, "
                   "or a folder")
    p.add_argument("--max-seq-length", type=int, default=None, help="tokens per text while training (default 128)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when there is a GPU)")
    _add_training_options(p)
    p.set_defaults(func=_cmd_finetune, train=None)

    p = sub.add_parser("eval", help="quality vs cost over a grid of models, dims, precisions and oversampling")
    p.add_argument("dataset", help="a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("--models", default="minilm", help="comma-separated model specs (default: minilm)")
    p.add_argument("--dims", default=None, help="comma-separated dims (default: native, 768, 512, 256, 128, 64)")
    p.add_argument("--precisions", default="float32,int8,int8-symmetric,binary",
                   help="from float32,float16,int8 (int8 documents, float query),int8-symmetric (both "
                        "quantized),binary")
    p.add_argument("--oversample", default="none,4",
                   help="binary only: 'none' for the bits alone, a number for an int8 rescore of k x that")
    p.add_argument("--rerank", default=None, help="a cross-encoder folder or hub id to add a rerank row")
    p.add_argument("--rerank-queries", type=int, default=200)
    p.add_argument("--cache", default="sqlite", help=_CACHE_HELP + " (default: sqlite; 'none' for no cache)")
    p.add_argument("--join", default="space", help=_JOIN_HELP)
    p.add_argument("-o", "--output", default="eval-results.json")
    p.add_argument("--plot", default=None, help="write a PNG plot here")
    p.add_argument("--plain", action="store_true", help="a plain table even when rich is installed")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fusion", action="store_true", help="hybrid instead: BM25, dense, RRF, DBSF and the convex weight "
                   "fit on --fit-fraction of the queries, all scored on the other queries (first model only)")
    p.add_argument("--fit-fraction", type=float, default=0.5, help="with --fusion: the queries the weight is fit on")
    p.set_defaults(func=_cmd_eval)

    drift = sub.add_parser("drift", help="embedding drift history")
    dsub = drift.add_subparsers(dest="drift_command", required=True)
    p = dsub.add_parser("report", help="print each monitor's history, and plot it")
    p.add_argument("--monitor", default=None, help="one monitor (default: all)")
    p.add_argument("--db", default=None, help="the history file (default: $EMBEDOPT_HOME/drift.sqlite3)")
    p.add_argument("--plot", default=None, help="write a PNG plot here")
    p.set_defaults(func=_cmd_drift_report)

    export = sub.add_parser("export", help="export a model for torch-free inference (onnx) or for Node and browsers "
                            "(static)")
    esub = export.add_subparsers(dest="export_command", required=True)
    p = esub.add_parser("onnx", help="a sentence-transformers model (transformer, pooling, normalization) as ONNX, "
                        "verified against the source; serve it with -m onnx:DIR")
    p.add_argument("-m", "--model", default="minilm", help="a local sentence-transformers model: " + _MODEL_HELP)
    p.add_argument("-o", "--output", required=True, help="the folder to write")
    p.add_argument("--quantize", choices=("int8",), default=None, help="int8 weights (its own embedding space)")
    p.add_argument("--scheme", default=None, help="the int8 scheme (default: the best measured one)")
    p.add_argument("--optimize", action="store_true", help="fuse the graph with onnxruntime's optimizer")
    p.set_defaults(func=_cmd_export_onnx)
    p = esub.add_parser("static", help="a static model as ONNX + tokenizer.json, for the JavaScript loader in js/")
    p.add_argument("-m", "--model", default="static:distill", help="a static model: static:FOLDER or static:distill")
    p.add_argument("-o", "--output", required=True, help="the folder to write")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--int8", action="store_true", help="an int8 token table with a scale per row (about half "
                   "the size of the float16 table; its own embedding space)")
    p.set_defaults(func=_cmd_export_static)

    from .serve import add_arguments  # light: imports only the config module

    p = sub.add_parser("serve", help="an OpenAI- and Voyage-compatible embedding and rerank gateway (batching, cache, "
                       "budgets, rate limits); with no config: MiniLM and the static model on 127.0.0.1")
    add_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("build-index", help="build a versioned embedded index (version v1) from a BEIR-format corpus")
    p.add_argument("dataset", help="a BEIR-format folder; its corpus is indexed")
    p.add_argument("root", help="the versioned index folder to create")
    p.add_argument("-m", "--model", default="minilm", help=_MODEL_HELP)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--join", default="space", help=_JOIN_HELP)
    p.add_argument("--cache", default="memory,sqlite", help=_CACHE_HELP + " (default: memory,sqlite)")
    p.set_defaults(func=_cmd_index_build)

    p = sub.add_parser("migrate", help="move a versioned index to another model: plan, start (resumable), "
                       "status, shadow, cutover, rollback")
    p.add_argument("action", choices=("plan", "start", "status", "shadow", "cutover", "rollback"))
    p.add_argument("root", help="the versioned index folder")
    p.add_argument("-m", "--model", default=None, help="the model to migrate to (plan, start): " + _MODEL_HELP)
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dim of the new version")
    p.add_argument("--batch-size", type=int, default=256, help="documents re-embedded and saved per step")
    p.add_argument("--cache", default="memory,sqlite", help=_CACHE_HELP + " (default: memory,sqlite)")
    p.add_argument("--queries", default=None, help="shadow: a BEIR-format folder whose queries to replay")
    p.add_argument("--sample", type=int, default=200, help="shadow: how many of its queries")
    p.add_argument("--force", action="store_true", help="cutover before the backfill is complete")
    p.add_argument("--no-progress", action="store_true")
    _add_ray_options(p)
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("train-reranker", help="train a cross-encoder from MiniLM's weights on a BEIR-format dataset "
                       "(cached; prints its folder)")
    p.add_argument("dataset", help="a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    p.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2", help="encoder to start from")
    p.add_argument("--queries", type=int, default=1000, help="training queries (each with its hard negatives)")
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128, help="tokens per (query, document) pair")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_reranker)

    p = sub.add_parser("info", help="show a model's provider, fingerprint and dimensions")
    p.add_argument("-m", "--model", default="minilm", help=_MODEL_HELP)
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    cache = sub.add_parser("cache", help="inspect, clear or fill the vector cache")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    default_cache = os.environ.get("EMBEDOPT_CACHE") or "sqlite"
    p = csub.add_parser("stats", help="entries and bytes per tier, and per model fingerprint")
    p.add_argument("--cache", default=default_cache, help=_CACHE_HELP + " (default: $EMBEDOPT_CACHE or sqlite)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_cache_stats)
    p = csub.add_parser("clear", help="delete cached vectors (all, or one model's with --fingerprint)")
    p.add_argument("--cache", default=default_cache, help=_CACHE_HELP + " (default: $EMBEDOPT_CACHE or sqlite)")
    p.add_argument("--fingerprint", default=None,
                   help="only entries whose fingerprint id starts with this (see `embedopt info` or `cache stats`)")
    p.set_defaults(func=_cmd_cache_clear)
    p = csub.add_parser("warm", help="embed a file into the cache ahead of time")
    p.add_argument("input", nargs="?", default="-", help="a .jsonl file, a text file (one text a line), or -")
    p.add_argument("-m", "--model", default="minilm", help=_MODEL_HELP)
    p.add_argument("--input-type", choices=("document", "query"), default="document")
    p.add_argument("--field", default="text", help="the text field of .jsonl input (default: text)")
    p.add_argument("--cache", default=default_cache, help=_CACHE_HELP + " (default: $EMBEDOPT_CACHE or sqlite)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_cache_warm)

    p = sub.add_parser("specs", help="the model and cache specs this installation understands, with their options")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_specs)

    p = sub.add_parser("models", help="the model catalog, or recommendations for a use case")
    p.add_argument("--use-case", choices=("general", "multilingual", "code", "low-latency"), default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("costs", help="print a saved cost ledger, or estimate API vs self-hosted costs")
    p.add_argument("ledger", nargs="?", help="a JSON file written by CostLedger.to_json(path)")
    p.add_argument("--estimate", action="store_true", help="compare API dollars with self-hosted machine time")
    p.add_argument("--model", default="voyage-3", help="API model whose price to use (default: voyage-3)")
    p.add_argument("--price", type=float, default=None, help="USD per 1M tokens (default: the catalog's)")
    p.add_argument("--requests-per-day", type=float, default=10_000)
    p.add_argument("--tokens-per-request", type=float, default=1_500)
    p.add_argument("--cache-hit-rate", type=float, default=0.0)
    p.add_argument("--instance-usd-per-hour", type=float, default=0.50)
    p.add_argument("--instance-tokens-per-second", type=float, default=10_000,
                   help="what one instance embeds per second (measure yours: make bench)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_costs)
    return parser


def _one_line(exc: BaseException) -> str:
    """The error as one line: embedopt's own message (which says what to do), or the system's with advice."""
    text = str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, EmbedOptError):
        text = f"{text}; check the path, its folder and the permissions (or the address, for a server)"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input of any kind (a typed :class:`~embedopt.errors.EmbedOptError`, or the system's
    OSError: a path that cannot be read or written, a port in use) ends with one line on stderr and exit status
    2; every file a command writes appears whole or not at all."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (EmbedOptError, OSError) as exc:
        print(f"embedopt: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embedopt: interrupted (files being written were not put in place)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
