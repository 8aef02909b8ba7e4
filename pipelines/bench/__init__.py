"""`mamba-bio-audio bench scan|generate|gpu|context`: benchmarks that print a table and write JSON."""

import importlib

BENCHMARKS = {
    "scan": "mamba_bio_audio.pipelines.bench.scan",
    "generate": "mamba_bio_audio.pipelines.bench.generate",
    "gpu": "mamba_bio_audio.pipelines.bench.gpu",
    "context": "mamba_bio_audio.pipelines.bench.context",
}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(bench_main=module.main)


def main(args) -> int:
    return args.bench_main(args)
