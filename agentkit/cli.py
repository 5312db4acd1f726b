"""The ``agentkit`` command line.

    agentkit plugins [--json]          (kinds: algorithm, action_head, env, exporter; `hooks` for lifecycle hooks)
    agentkit config show FILE [--set KEY=VALUE ...]
    agentkit config schema [--out FILE]
    agentkit train FILE [--set KEY=VALUE ...] [--run-dir DIR] [--resume]
    agentkit train RUN_DIR --resume [--set algorithm.total_steps=N]   (continue a run from its saved config)
    agentkit eval (RUN_DIR | FILE.onnx) [--episodes N] [--seed S] [--json] [--stochastic] [--gif FILE] [--env ID]
                  [--opponent random|minimax[:D]|FILE.onnx|RUN_DIR] [--seat first|second|both]
    agentkit export RUN_DIR [--out FILE] [--stochastic] [--opset N] [--checkpoint NAME]
    agentkit engine-folder (web|godot|csharp) [DEST]   (copy an engine folder and its example config out)

Every subcommand takes ``-p MODULE`` (repeatable; before or after the subcommand) to load an extra plugin module, and ``-p no:NAME`` to block
one. A file made elsewhere (an .onnx, a run dir's config.yaml) imports no code that the command line does not
name with ``-p`` or ``--allow-import MODULE`` (``agentkit.trust``). Exit codes: 0 success; 2 bad usage, config or input (``UserError``: one message on stderr, no traceback);
1 an unexpected failure (traceback); 130 interrupted.

The ``agentkit`` command (``console_main``) ends its process without the interpreter's teardown once the
command is done (``exit_process``): freeing every object torch and the other modules made takes about 0.7 s
after a run, and nothing in it is output. The atexit handlers still run and stdout/stderr are flushed.

The heavy modules (trainer, evaluation, exporting) are imported inside their commands, so that
``agentkit plugins`` and ``agentkit config`` stay fast and work on their own. ``agentkit train`` draws
curve.png in a helper process (``agentkit.curve_process``) started before anything else, so that
matplotlib's import runs on another core while torch is imported and the run trains.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import math
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import agentkit
from agentkit.errors import RunAborted, UserError

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as ``UserError`` (exit code 2, one message)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


class UsageError(UserError):
    """A command line that does not parse."""


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


# -- commands ----------------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from agentkit.host import PluginHost
    from agentkit.registry import KINDS

    host = PluginHost(modules=args.plugin)
    kind_order = list(KINDS)
    rows = [
        {"kind": reg.kind, "name": reg.name, "description": reg.description, "provider": reg.provider}
        for reg in sorted(host.registry.all(), key=lambda r: (kind_order.index(r.kind), r.name))
    ]
    # Plugins that only observe or steer runs register no component; list them so their loading shows.
    rows += [
        {
            "kind": "hooks",
            "name": name,
            "description": "lifecycle hooks: " + ", ".join(h.removeprefix("agentkit_") for h in hooks),
            "provider": host.provider_of(name),
        }
        for name, hooks in host.lifecycle_hooks().items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.table import Table

    table = Table(title="agentkit plugins", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1, min_width=36)
    table.add_column("provider", overflow="fold", max_width=24)
    for row in rows:
        table.add_row(*(row[c] for c in ("kind", "name", "description", "provider")))
    console = _stdout_console()
    console.print(table)
    if not host.autoload:
        console.print("entry-point plugins are off (AGENTKIT_DISABLE_PLUGIN_AUTOLOAD is set)")
    return EXIT_OK


RUN_CONFIG_FILE = "config.yaml"  # what `agentkit train` saves in a run dir


def _config_file(file: str) -> tuple[Path, Path | None]:
    """FILE as given, or a run dir's saved config: (config path, the run dir or None)."""
    path = Path(file)
    if path.is_dir():
        if not (path / RUN_CONFIG_FILE).is_file():
            raise UserError(f"{file!r} is a directory without a {RUN_CONFIG_FILE}: give a YAML config or a run dir.")
        return path / RUN_CONFIG_FILE, path
    return path, None


def _check_saved_config(file: Path, args: argparse.Namespace, env: bool = True) -> None:
    """A run dir's saved config is a file made elsewhere: refuse (exit 2) the code it names unless the command
    line allows it (``agentkit.trust``), before anything it names is imported."""
    from agentkit.config import read_yaml
    from agentkit.trust import foreign_host

    data = read_yaml(file)
    foreign_host(data if env else {k: v for k, v in data.items() if k != "env"}, str(file), args.plugin,
                 args.allow_import)


def cmd_config_show(args: argparse.Namespace) -> int:
    from agentkit.host import load_run_config

    file, file_run_dir = _config_file(args.file)
    if file_run_dir is not None:
        _check_saved_config(file, args, env=False)  # showing builds no env
    config, _ = load_run_config(file, overrides=args.set, plugins=args.plugin, saved_run=file_run_dir is not None)
    sys.stdout.write(config.to_yaml())
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    from agentkit.config import json_schema
    from agentkit.host import PluginHost

    text = json.dumps(json_schema(PluginHost(modules=args.plugin).registry), indent=2) + "\n"
    if args.out:
        _write_text(Path(args.out), text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from agentkit.curve_process import CurveProcess
    from agentkit.host import load_run_config

    file, file_run_dir = _config_file(args.file)
    # started first: it imports matplotlib on another core while this process imports torch and trains
    with CurveProcess() as curves:
        with _collector_paused():
            if file_run_dir is not None:
                _check_saved_config(file, args)
            config, host = load_run_config(file, overrides=args.set, plugins=args.plugin,
                                           saved_run=file_run_dir is not None)
            from agentkit.trainer import train

        run_dir = Path(args.run_dir) if args.run_dir else file_run_dir
        metrics = train(config, host, run_dir=run_dir, resume=args.resume, draw_curve=curves.draw)
    _print_metrics(metrics, metrics.last_returns)
    done_dir = metrics.run_dir or run_dir
    if done_dir is not None:
        print(f"run {metrics.reason}: {done_dir}  (next: agentkit eval {done_dir} · agentkit export {done_dir})")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    target = Path(args.target)
    deterministic = not args.stochastic
    gif = None
    if args.gif:
        from agentkit.evaluation import check_gif_path

        gif = check_gif_path(args.gif)  # before any work: a bad name costs nothing
    if args.opponent is not None or args.seat is not None:
        return _eval_against(args, target, deterministic)
    from agentkit.exporting import find_export

    export = find_export(target)
    if export is not None:
        if args.checkpoint:
            raise UserError("eval: --checkpoint applies to run directories only; an .onnx file is one policy.")
        from agentkit.evaluation import evaluate_onnx

        target, files = export
        if files != [Path(args.target)]:
            names = ", ".join(str(f) for f in files)
            print(f"eval: {args.target} is the export {names}; playing it from the .onnx file(s)", file=sys.stderr)
        result = evaluate_onnx(
            target, episodes=args.episodes, seed=args.seed, deterministic=deterministic, gif=gif, env=args.env,
            extra_plugins=tuple(args.plugin), allow_imports=tuple(args.allow_import),
        )
    else:
        if not target.is_dir():
            raise UserError(
                f"eval: {str(target)!r} is neither a run directory nor an .onnx file "
                "(give the folder `agentkit train` wrote, or an exported .onnx)."
            )
        if args.env:
            raise UserError("eval: --env applies to .onnx files only; a run directory records its own env.")
        from agentkit.evaluation import evaluate_run

        result = evaluate_run(
            target, episodes=args.episodes, seed=args.seed, deterministic=deterministic, gif=gif,
            extra_plugins=tuple(args.plugin), checkpoint=args.checkpoint, allow_imports=tuple(args.allow_import),
        )
    if args.json:
        _print_json(result.to_json())
        return EXIT_OK
    console = _stdout_console()
    console.print(
        f"{result.episodes} episode{'' if result.episodes == 1 else 's'} "
        f"({'deterministic' if deterministic else 'stochastic'}, seed {args.seed}): "
        f"return {result.mean_return:.3f} ± {result.std_return:.3f}, "
        f"mean length {sum(result.lengths) / max(len(result.lengths), 1):.1f}"
    )
    for group, stats in (result.groups or {}).items():
        console.print(f"  {group}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))
    if result.infos:
        console.print("  from the env's infos, mean over episodes: "
                      + ", ".join(f"{k} {_fmt(v)}" for k, v in result.infos.items()))
    if gif is not None:
        console.print(f"wrote {gif}")
    return EXIT_OK


def _eval_against(args: argparse.Namespace, target: Path, deterministic: bool) -> int:
    """``agentkit eval TARGET --opponent SPEC [--seat first|second|both]``: win/draw/loss rates."""
    if args.opponent is None:
        raise UserError("eval: --seat goes with --opponent (random, minimax[:DEPTH], FILE.onnx or RUN_DIR).")
    if args.gif:
        raise UserError("eval: --opponent plays matches; --gif applies to plain eval only.")
    if args.checkpoint and target.suffix == ".onnx":
        raise UserError("eval: --checkpoint applies to run directories only; an .onnx file is one policy.")
    if not (target.suffix == ".onnx" and target.is_file() or target.is_dir()):
        raise UserError(f"eval: {str(target)!r} is neither a run directory nor an existing .onnx file.")
    if args.env and target.suffix != ".onnx":
        raise UserError("eval: --env applies to .onnx files only; a run directory records its own env.")
    from agentkit.matches import evaluate_against

    result = evaluate_against(
        target, args.opponent, seat=args.seat or "both", episodes=args.episodes, seed=args.seed,
        deterministic=deterministic, env=args.env, extra_plugins=tuple(args.plugin),
        allow_imports=tuple(args.allow_import),
    )
    if args.json:
        _print_json(result.to_json())
        return EXIT_OK
    console = _stdout_console()
    console.print(f"against {result.opponent}, {result.episodes} games: win {result.win_rate:.1%}, "
                  f"draw {result.draw_rate:.1%}, loss {result.loss_rate:.1%}")
    for seat, r in result.seats.items():
        console.print(f"  {seat} ({r.agent}, {r.episodes} games): win {r.win_rate:.1%}, draw {r.draw_rate:.1%}, "
                      f"loss {r.loss_rate:.1%}")
    return EXIT_OK


def cmd_engine_folder(args: argparse.Namespace) -> int:
    from agentkit_exports.engine_folders import ENGINES, copy_engine_folder

    dest = Path(args.dest)
    written = copy_engine_folder(args.engine, dest)
    folders, config = ENGINES[args.engine]
    print(f"wrote {len(written)} files into {dest}: " + ", ".join(f"exports/{f}/" for f in folders)
          + f", examples/{config}")
    print(f"run exports/{folders[0]}/README.md's commands from {dest} (as from the repository root)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"export: the run directory {str(run_dir)!r} does not exist.")
    from agentkit.exporting import export_run

    paths = export_run(
        run_dir,
        out=Path(args.out) if args.out else None,
        stochastic=args.stochastic,
        opset=args.opset,
        extra_plugins=tuple(args.plugin),
        allow_imports=tuple(args.allow_import),
        checkpoint=args.checkpoint,
    )
    for path in paths:
        print(path)
    if len(paths) > 1:
        play = args.out if args.out and Path(args.out).suffix.lower() == ".onnx" else (args.out or paths[0].parent)
        print(f"export: {len(paths)} files, one per policy group; `agentkit eval {play}` plays them all",
              file=sys.stderr)
    return EXIT_OK


# -- helpers -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A command's imports (torch, the plugins) with the cyclic garbage collector off, then what they loaded
    frozen (``gc.freeze``): ~190k objects that live as long as the process, with almost no garbage among them.
    Collected as they load, they cost three full collections; left in the young generations, the first young
    and middle-aged collections after (about 0.3 s of ``agentkit train``'s start either way). The collector is
    restored as it was; the trainer's own freeze for its loop ends with ``gc.unfreeze``, which hands these back."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def _print_json(data: Any) -> None:
    """Print ``data`` as valid JSON always: a figure that is not finite (NaN, an infinity) is null."""
    from agentkit.evaluation import json_ready

    print(json.dumps(json_ready(data), indent=2, allow_nan=False))


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _print_metrics(metrics: dict[str, float], last_returns: tuple[int, dict[str, float]] | None = None) -> None:
    """The last iteration's metrics as a table. It always has a return row: when no episode ended in that
    iteration, the latest logged return(s), labelled with their step, or "no episode ended"."""
    if not metrics:
        return
    from rich.table import Table

    from agentkit.runlog import RETURN_METRIC

    table = Table(title="final metrics (the last iteration)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, _fmt(value))
    if RETURN_METRIC not in metrics:
        if last_returns is None:
            table.add_row(RETURN_METRIC, "no episode ended")
        else:
            step, returns = last_returns
            for key, value in returns.items():
                table.add_row(f"{key} (last logged, step {step:,})", _fmt(value))
    _stdout_console().print(table)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a failure (a full disk, a directory) leaves no file behind."""
    from agentkit.files import write_atomic

    if path.is_dir():
        raise UserError(f"cannot write {str(path)!r}: it is a directory; give a file name, e.g. {path / 'schema.json'}")
    try:
        write_atomic(path, text.encode())
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


#: The largest seed (numpy's legacy seeding and many envs take 32-bit seeds; the config's ``seed`` has the same
#: range). Episode i of ``eval --seed S`` resets with S + i.
MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0..{MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer 0..{MAX_SEED}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-p", dest="plugin", action="append", default=[], metavar="MODULE",
        help="load a plugin module (repeatable); -p no:NAME blocks a plugin or entry point",
    )
    trust = _Parser(add_help=False)
    trust.add_argument(
        "--allow-import", action="append", default=[], metavar="MODULE",
        help="let a file made elsewhere (an .onnx's metadata, a run dir's config.yaml) import MODULE or "
        "MODULE:ATTR, and what lies inside it (repeatable); its plugins: load with -p MODULE. Without them, "
        "such a file that names code is refused (exit 2). See docs/runs.md, 'What is trusted'",
    )
    overrides = _Parser(add_help=False)
    overrides.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set algorithm.total_steps=5000 (repeatable; typed by the model)",
    )

    parser = _Parser(prog="agentkit", description="Train game agents, extend them with plugins, export to ONNX.")
    parser.add_argument("--version", action="version", version=f"agentkit {agentkit.__version__}")
    # -p before the subcommand too (`agentkit -p my.plugin train ...`); its own dest, since a subcommand's
    # default would otherwise overwrite what the main parser read. main() merges the two, in order.
    parser.add_argument(
        "-p", dest="plugin_before", action="append", default=[], metavar="MODULE",
        help="load a plugin module (repeatable, before or after the subcommand); -p no:NAME blocks one",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("plugins", parents=[common], help="list every registered plugin")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plugins)

    config = sub.add_parser("config", help="inspect run configs")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=_Parser)
    config_sub.required = True
    p = config_sub.add_parser(
        "show", parents=[common, trust, overrides], help="print a config resolved with its defaults, as YAML"
    )
    p.add_argument("file", metavar="FILE", help="a YAML config, or a run dir (shows its saved config)")
    p.set_defaults(func=cmd_config_show)
    p = config_sub.add_parser("schema", parents=[common], help="print the JSON Schema of a run config")
    p.add_argument("--out", metavar="FILE", help="write the schema to FILE instead of stdout")
    p.set_defaults(func=cmd_config_schema)

    p = sub.add_parser("train", parents=[common, trust, overrides], help="train an agent from a YAML config")
    p.add_argument("file", metavar="FILE", help="a YAML config, or a run dir (its saved config; with --resume)")
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<env>-<algorithm>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common, trust], help="play episodes with a trained run or an exported .onnx")
    p.add_argument("target", metavar="RUN_DIR|FILE.onnx")
    p.add_argument("--episodes", type=_positive_int, default=10, metavar="N")
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help=f"episode i resets with seed S + i (0..{MAX_SEED}; default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    p.add_argument("--gif", metavar="FILE.gif", help="record the first episode to an animated GIF (a .gif name)")
    p.add_argument("--env", metavar="ID", help="env to play an .onnx file in (default: the one in its metadata)")
    p.add_argument(
        "--checkpoint", metavar="NAME", help="a run dir's checkpoint to play, e.g. step_100000 or step_100000.pt (default: latest)"
    )
    p.add_argument(
        "--opponent", metavar="SPEC",
        help="turn-based games: play against a registered opponent (random, minimax[:DEPTH], a plugin's NAME[:ARG]), "
        "FILE.onnx or RUN_DIR and report win/draw/loss rates (--episodes games per seat)",
    )
    p.add_argument("--seat", choices=["first", "second", "both"], help="with --opponent: the seat to play (default both)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", parents=[common, trust], help="export a trained run's policies to ONNX")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", help="output file (multi-agent runs: one file per group beside it)")
    p.add_argument("--stochastic", action="store_true", help="export a sampling policy (adds a `noise` input)")
    p.add_argument("--opset", type=_positive_int, metavar="N", help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--checkpoint", metavar="NAME", help="the checkpoint to export, e.g. step_100000 or step_100000.pt (default: latest)"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "engine-folder", help="copy an engine folder (web page, Godot project, C# game) and its example config out"
    )
    p.add_argument("engine", choices=["web", "godot", "csharp"], metavar="ENGINE", help="web, godot or csharp")
    p.add_argument("dest", nargs="?", default=".", metavar="DEST",
                   help="where exports/ENGINE and examples/ go (default: the current folder); no file is overwritten")
    p.set_defaults(func=cmd_engine_folder)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 1 unexpected, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if hasattr(args, "plugin"):
            args.plugin = [*args.plugin_before, *args.plugin]
        return args.func(args)
    except UserError as exc:
        print(f"agentkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("agentkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunAborted as exc:
        print(f"agentkit: {exc}; the last checkpoint saved stays valid (continue with --resume)", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `agentkit plugins --json | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_UNEXPECTED


def exit_process(code: int) -> NoReturn:
    """End the process with exit code ``code`` now, skipping the interpreter's teardown.

    What a normal exit does that someone could see is done first: the atexit handlers run (``logging``'s flush,
    multiprocessing's worker shutdown, ``weakref.finalize(..., atexit=True)`` callbacks, a plugin's own), then
    stdout and stderr are flushed. What is skipped is freeing each module's objects one by one, which takes
    about 0.7 s once torch is loaded; a file a plugin left open (and did not close in ``agentkit_train_end``
    or an atexit handler) is not flushed either. While a non-daemon thread still runs, the process exits the
    normal way instead, which waits for it.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed stream: nothing left to write to
            pass
    os._exit(code)


def console_main() -> None:
    """The ``agentkit`` console script: ``main()`` on ``sys.argv``, then ``exit_process`` with its exit code."""
    exit_process(main())


if __name__ == "__main__":
    # `python -m agentkit.cli` puts the working directory first on sys.path: a received run folder used as the
    # working directory could then shadow a module imported later (a file next to its config.yaml would run,
    # against agentkit.trust). The `agentkit` console script puts no such entry there; neither does this.
    if not sys.flags.safe_path and sys.path and os.path.abspath(sys.path[0] or ".") == os.getcwd():
        del sys.path[0]
    console_main()
