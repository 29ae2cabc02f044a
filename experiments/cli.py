"""The `jaxgrad` command: list, run, figures, reproduce, info.

Each subcommand is a `Command`: a name, a help line, a function that adds its
arguments, and a `prepare(args)` that validates everything (experiment names, scale,
``--set`` values, the Config's own checks) and returns the action to run. Bad usage
fails in `prepare`, before any work, as one line on stderr and exit code 2.

Adding a subcommand (``bench``, say) means appending a `Command` to `COMMANDS`.
Options shared by the commands that run experiments live in `_execution_options`,
among them the multi-process flags (``--coordinator HOST:PORT --num-processes N
--process-id I --init-timeout SECONDS``, docs/accelerators.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

SCALES = ("quick", "full")


class UsageError(Exception):
    """Bad command-line usage: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage block and exit; we want one line
        raise UsageError(message)


class StartupError(Exception):
    """A multi-process run could not start (the runtime's own error): one line, exit code 1."""


class Command(NamedTuple):
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Callable[[], int]]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _execution_options(parser: argparse.ArgumentParser, *, sets: bool) -> None:
    """Options of the commands that run experiments (``run``, ``reproduce``)."""
    parser.add_argument("--scale", choices=SCALES, default="quick", help="preset size (default: quick)")
    parser.add_argument("--seed", type=int, default=0, help="root PRNG seed (default: 0)")
    if sets:
        parser.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one Config field (repeatable)",
        )
    parser.add_argument("--out", default="results", metavar="DIR", help="results root (default: ./results)")
    parser.add_argument("--force", action="store_true", help="recompute finished points")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    group = parser.add_argument_group(
        "multi-process runs",
        "default: from SLURM (srun), Open MPI (mpirun) or JAX_COORDINATOR_ADDRESS + "
        "JAX_NUM_PROCESSES + JAX_PROCESS_ID; otherwise one process (docs/accelerators.md)",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, the same for every process")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (0 writes the results)")
    group.add_argument(
        "--init-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for every process to connect (default: 300)",
    )


def _join(args) -> None:
    """Joins the processes of a multi-process run (a no-op for one); before any JAX computation."""
    from jaxgrad import cluster

    # Bad flags raise ValueError (exit 2) before any network use; absent peers, TimeoutError (exit 1);
    # anything else the runtime raises (the coordinator's port taken, ...), StartupError (exit 1).
    try:
        cluster.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.init_timeout)
    except (ValueError, TimeoutError):
        raise
    except Exception as error:
        raise StartupError(f"could not start the multi-process run: {error}") from None


def _leave_together(finish: Callable[[], int]) -> int:
    """Runs `finish` (figures, gallery) on process 0 and returns its exit status on every process.

    The other processes wait for it, so all leave together with process 0's status; if
    `finish` raises, they leave with status 1. In a single-process run: ``finish()``.
    """
    from jaxgrad import cluster

    status = None
    if cluster.is_writer():
        try:
            status = finish()
        except Exception:
            cluster.broadcast_from_writer(1)
            raise
    return int(cluster.broadcast_from_writer(status))


def _check_same_run(args, plan) -> None:
    """Every process must run the same command (apart from --process-id): else a clear error on each."""
    import dataclasses

    import jax

    import jaxgrad
    from jaxgrad import cluster

    cluster.check_same_config(
        dict(
            command=args.command,
            scale=args.scale,
            seed=args.seed,
            force=args.force,
            studies={e.NAME: dataclasses.asdict(config) for e, config in plan},
            versions=dict(jaxgrad=jaxgrad.__version__, jax=jax.__version__),
        )
    )


def _check_seed(seed: int) -> int:
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must lie in [0, 2**32), got seed={seed}")
    return seed


def _check_out(out: str) -> Path:
    """`out` is, or can be made, a directory this process can write in; else a UsageError naming why."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out!r} is a file, not a directory; give a directory for the results")
    existing = next(p for p in [path.absolute(), *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {out!r} cannot be created: {str(existing)!r} is a file, not a directory")
    problem = None if os.access(existing, os.W_OK | os.X_OK) else "permission denied"
    if problem is None:  # os.access says yes to root even on a read-only file system: try it
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            problem = (error.strerror or str(error)).lower()
    if problem:
        where = "in it" if existing == path.absolute() else f"in {str(existing)!r}, where it would be created"
        raise UsageError(f"--out {out!r}: cannot write {where} ({problem}); choose a writable directory")
    return path


# --------------------------------------------------------------------------- commands


def _prepare_list(args):
    import experiments

    def action():
        registry = experiments.discover()
        width = max((len(n) for n in registry), default=0)
        for name, module in registry.items():
            print(f"{name:<{width}}  {module.SECTION:<5}  {module.TITLE}")
        return 0

    return action


def _run_one(experiment, config, args, argv_text: str):
    from jaxgrad.cluster import is_writer
    from jaxgrad.store import Store
    from experiments.runner import outcome, run_experiment

    store = Store.of(args.out, experiment.NAME)
    manifest = run_experiment(
        experiment,
        config,
        store=store,
        seed=args.seed,
        scale=args.scale,
        overrides=getattr(args, "sets", []),
        force=args.force,
        progress=args.progress and is_writer(),
        command=argv_text,
    )
    if is_writer():
        _say(f"{outcome(manifest)} -> {store.dir}")
    return store


def _rerun(experiment, store, manifest: dict | None, *, force: bool = False) -> str:
    """The command that regenerates `store` (with the stored run's scale, seed and --set)."""
    words = ["jaxgrad", "run", experiment.NAME, *(["--force"] if force else [])]
    if manifest:
        words += ["--scale", str(manifest.get("scale", "quick")), "--seed", str(manifest.get("seed", 0))]
        words += [w for s in manifest.get("overrides", []) for w in ("--set", s)]
    if store.dir.parent != Path("results"):
        words += ["--out", str(store.dir.parent)]
    return shlex.join(words)


def _draw(experiment, store) -> int:
    from jaxgrad.store import UnreadableFileError, read_csv
    import experiments
    from experiments.runner import draw_figures

    try:
        manifest = store.read_manifest()
    except UnreadableFileError as error:
        remedy = (
            f"restore it (e.g. `git checkout -- {store.manifest}`) or regenerate it with "
            f"`{_rerun(experiment, store, None, force=True)}` and the original --scale, --seed and --set"
        )
        _say(f"jaxgrad: error: {error.with_remedy(remedy)}")
        return 1
    if manifest is None or not store.data.exists():
        _say(
            f"jaxgrad: error: no stored results for {experiment.NAME} in {store.dir}; "
            f"run `{_rerun(experiment, store, None)}` first"
        )
        return 1
    config = experiments.config_from_dict(experiment.Config, manifest["config"])
    try:
        figures = draw_figures(experiment, config, store=store)
    except UnreadableFileError as error:
        remedy = f"`{_rerun(experiment, store, manifest)}` regenerates it"
        _say(f"jaxgrad: error: {error.with_remedy(remedy)}")
        return 1
    checks = read_csv(store.comparisons)
    passed = sum(row["passed"] == "True" for row in checks)
    _say(f"{experiment.NAME}: {len(figures)} figures -> {store.dir} ({passed}/{len(checks)} checks pass)")
    return 0


def _write_gallery(root: Path, chosen, status: int) -> int:
    """The gallery, unless a study's files could not be read (said above): it would be built from them."""
    from experiments import gallery

    if status:
        _say(f"gallery not rewritten ({root / 'README.md'}): fix the errors above first")
        return status
    _say(f"gallery -> {gallery.write_gallery(root, chosen)}")
    return 0


def _prepare_run(args):
    import experiments

    experiment = experiments.get(args.name)
    _check_seed(args.seed)
    _check_out(args.out)
    config = experiments.with_overrides(experiments.preset(experiment, args.scale), args.sets)
    _join(args)  # after every usage check: a typo is reported at once, not after waiting for the others

    def action():
        _check_same_run(args, [(experiment, config)])
        store = _run_one(experiment, config, args, args.argv_text)
        return _leave_together(lambda: _draw(experiment, store))

    return action


def _prepare_figures(args):
    from jaxgrad.store import Store
    import experiments

    chosen = [experiments.get(n) for n in args.names] or list(experiments.discover().values())
    _check_out(args.out)

    def action():
        stores = [(e, Store.of(args.out, e.NAME)) for e in chosen]
        if args.names:
            return max(_draw(e, s) for e, s in stores)
        stores = [(e, s) for e, s in stores if s.data.exists()] or stores  # all: skip what was never run
        status = max((_draw(e, s) for e, s in stores), default=0)
        return _write_gallery(Path(args.out), chosen, status)

    return action


_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def _default_jobs() -> int:
    """Studies run at once by ``reproduce``: one per core up to 4 on a CPU-only installation, else 1.

    Compilation, most of a quick study's time, is largely single-threaded, so two studies on two cores
    finish in about 0.7 of the time one after the other. Processes sharing an accelerator would each
    claim most of its memory, so with an accelerator plugin installed (and JAX_PLATFORMS not "cpu")
    the studies run one at a time.
    """
    import importlib.util

    platforms = os.environ.get("JAX_PLATFORMS", "")
    cpu_only = platforms == "cpu" or not any(importlib.util.find_spec(p) for p in _ACCELERATOR_PLUGINS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores)) if cpu_only else 1


def _check_jobs(jobs: int | None, processes) -> int:
    if jobs is None:
        return 1 if processes.num_processes > 1 else _default_jobs()
    if jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got --jobs {jobs}")
    if jobs > 1 and processes.num_processes > 1:
        raise UsageError(
            f"--jobs {jobs} runs studies in separate local processes, which a multi-process run "
            f"({processes.num_processes} processes) cannot share; leave --jobs out (or --jobs 1)"
        )
    return jobs


def _child_command(experiment, args) -> list[str]:
    """The command that runs one study of a parallel ``reproduce``: ``jaxgrad run`` with its options."""
    command = [sys.executable, "-m", "jaxgrad", "run", experiment.NAME, "--scale", args.scale]
    command += ["--seed", str(args.seed), "--out", str(args.out), "--no-progress"]
    return command + (["--force"] if args.force else [])


def _run_in_parallel(plan, args, jobs: int) -> int:
    """Each study as ``python -m jaxgrad run NAME …`` in a child process, `jobs` at a time; longest first.

    A study's output is printed, whole, when it finishes. Returns the worst exit status.
    """
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from jaxgrad.store import Store

    def expected_seconds(experiment) -> float:  # from the stored manifest of an earlier run, if any
        try:
            manifest = Store.of(args.out, experiment.NAME).read_manifest() or {}
        except Exception:
            manifest = {}
        return float(manifest.get("attempt_seconds", manifest.get("wall_seconds", 0.0)) or 0.0)

    order = sorted(plan, key=lambda item: -expected_seconds(item[0]))
    total = len(order)
    done = []

    def run(item):
        experiment, _ = item
        child = subprocess.run(
            _child_command(experiment, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        done.append(experiment.NAME)
        text = child.stdout.rstrip()
        failed = "" if child.returncode == 0 else f" (exit status {child.returncode})"
        _say(f"[{len(done)}/{total}] {experiment.NAME}{failed}" + ("\n" + text if text else ""))
        return child.returncode

    _say(f"reproduce: {total} studies, {jobs} at a time (--jobs 1: one after the other, in this process)")
    with ThreadPoolExecutor(jobs) as pool:
        statuses = list(pool.map(run, order))
    return max(statuses, default=0)


def _prepare_reproduce(args):
    from jaxgrad import cluster
    import experiments

    _check_seed(args.seed)
    _check_out(args.out)
    plan = [(e, experiments.preset(e, args.scale)) for e in experiments.discover().values()]
    jobs = _check_jobs(args.jobs, cluster.resolve(args.coordinator, args.num_processes, args.process_id))
    if jobs > 1:

        def parallel():
            status = _run_in_parallel(plan, args, jobs)
            return _write_gallery(Path(args.out), [e for e, _ in plan], status)

        return parallel
    _join(args)

    def action():
        _check_same_run(args, plan)
        stores = [(e, _run_one(e, config, args, args.argv_text)) for e, config in plan]

        def finish():
            status = max((_draw(e, s) for e, s in stores), default=0)
            return _write_gallery(Path(args.out), [e for e, _ in plan], status)

        return _leave_together(finish)

    return action


def _prepare_info(args):
    def action():
        import jax

        from jaxgrad.store import environment

        env = environment()
        for name, version in env["versions"].items():
            print(f"{name:<8} {version}")
        print(f"backend  {env['backend']}")
        print(f"devices  {', '.join(env['devices'])}")
        print(f"x64      {jax.config.jax_enable_x64}")
        print(f"git      {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}")
        from jaxgrad._known_bad import jaxlib_version, known_bad

        why = known_bad()
        if why:
            print(
                f"WARNING  jaxlib {jaxlib_version()} is known to compute jaxgrad's programs wrongly: {why}. "
                'Install another version: pip install "jaxlib!=0.10.2" "jax!=0.10.2"'
            )
        return 0

    return action


def _configure_bench(p):
    from benchmarks import bench  # imports no JAX

    bench.add_arguments(p)


def _prepare_bench(args):
    from benchmarks import bench

    bench.check(args)
    return lambda: bench.run(args)


def _configure_run(p):
    p.add_argument("name", metavar="NAME", help="experiment (see `jaxgrad list`)")
    _execution_options(p, sets=True)


def _configure_reproduce(p):
    _execution_options(p, sets=False)
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="studies at once, each in its own process (default: one per core, at most 4, on a CPU-only "
        "installation; 1 with an accelerator or in a multi-process run)",
    )


def _configure_figures(p):
    p.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all with stored results)")
    p.add_argument("--out", default="results", metavar="DIR", help="results root (default: ./results)")


COMMANDS = [
    Command("list", "the experiments, one line each, with the seed section", lambda p: None, _prepare_list),
    Command("run", "run one experiment (resuming a partial run) and draw its figures", _configure_run, _prepare_run),
    Command(
        "figures",
        "redraw figures from stored results, without recomputing (all: and the gallery)",
        _configure_figures,
        _prepare_figures,
    ),
    Command(
        "reproduce",
        "every experiment, every figure, then results/README.md",
        _configure_reproduce,
        _prepare_reproduce,
    ),
    Command("info", "JAX version, backend and devices", lambda p: None, _prepare_info),
    Command(
        "bench",
        "time the engine against the machine's limit and user-written baselines -> results/benchmarks",
        _configure_bench,
        _prepare_bench,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxgrad", description="Vanishing and exploding gradients: experiments and figures.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.configure(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def _interrupted(args, argv: list[str]) -> str:
    """What to say on Ctrl-C: for a sweep, the command that resumes it (never one with --force)."""
    if args.command not in ("run", "reproduce"):
        return "jaxgrad: interrupted"
    resume = [a for a in argv if not (len(a) >= 3 and "--force".startswith(a))]  # argparse takes prefixes
    note = " (the same command without --force, which would discard them)" if len(resume) < len(argv) else ""
    return f"jaxgrad: interrupted; the finished points are kept, and `{shlex.join(['jaxgrad', *resume])}` resumes{note}"


def main(argv=None) -> int:
    """Entry point of the `jaxgrad` console script; returns the exit code."""
    from jaxgrad import cluster
    from jaxgrad.store import UnreadableFileError

    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {c.name: c for c in COMMANDS}
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError(f"missing command; choose from: {', '.join(commands)}")
        args.argv_text = shlex.join(["jaxgrad", *argv])
        action = commands[args.command].prepare(args)
    except (UsageError, ValueError) as error:
        _say("jaxgrad: error: " + " ".join(str(error).split()))
        return 2
    except (TimeoutError, StartupError) as error:  # the other processes did not arrive, or no runtime (_join)
        _say("jaxgrad: error: " + " ".join(str(error).split()))
        return 1
    try:
        return action()
    except (TimeoutError, cluster.ConfigMismatchError, UnreadableFileError) as error:
        _say("jaxgrad: error: " + " ".join(str(error).split()))
        return 1
    except KeyboardInterrupt:
        _say(_interrupted(args, argv))
        return 130
