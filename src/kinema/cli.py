"""`kinema` command line: generate, train, eval, info.

Errors a user can fix (KinemaError) print as one line on stderr with exit code 2, no traceback.
Heavy imports happen inside each subcommand so `kinema --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
from pathlib import Path

from kinema.errors import KinemaError


def _generate(args: argparse.Namespace) -> None:
    from kinema.io.video import check_output, fit_image, read_image, read_video, write_gif, write_mp4
    from kinema.pipelines.pipeline import check_settings, load_pipeline

    refine = args.long == "coarse2fine"
    if args.strength is not None and not (args.video or refine):
        raise KinemaError("--strength sets how much of an input video to keep: give the video with --video PATH "
                          "(or refine a coarse clip with --long coarse2fine)")
    strength = (0.5 if refine else 0.6) if args.strength is None else args.strength
    check_settings(args.steps, args.guidance, args.shift, args.seed, args.sampler,  # before any work
                   strength=strength if args.video or refine else None)
    if args.long is not None:
        from kinema.pipelines.long import ROUTES

        if args.long not in ROUTES:
            raise KinemaError(f"--long {args.long!r}: built routes are {', '.join(ROUTES)}")
        if args.video or args.end_image or args.camera or args.restore_detail:
            raise KinemaError("--long continues a clip chunk by chunk: it takes --image, not --video, --end-image, "
                              "--camera or --restore-detail")
    if args.camera:
        from kinema.data.camera import parse_camera

        parse_camera(args.camera)  # (an unknown motion is one line before the model loads)
    if not 1 <= args.fps <= 240:
        raise KinemaError(f"--fps {args.fps}: use 1 to 240")
    check_output(args.output, ".mp4")
    if args.gif:
        check_output(args.gif, ".gif", "--gif")
    video = read_video(args.video) if args.video else None  # (an unreadable file is one line)
    images = {k: read_image(getattr(args, k)) for k in ("image", "end_image") if getattr(args, k)}
    pipe = load_pipeline(args.model, device=args.device, precision=args.precision, compile=args.compile,
                         verify=not args.no_verify)
    if args.long:
        from kinema.pipelines.long import check_long, generate_long

        check_long(args.long, args.frames, pipe.cfg.frames, pipe.cfg.vae.time_compression, args.context, args.chunk,
                   args.stride)  # before any work
    pipe.check_request(args.prompt, args.frames, end_image=bool(args.end_image))
    for key, image in images.items():
        images[key], note = fit_image(image, pipe.cfg.width, pipe.cfg.height)
        if note:
            print(f"note: --{key.replace('_', '-')}: {note}", file=sys.stderr)
    sampling = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, shift=args.shift)
    if args.long:
        frames = generate_long(pipe, args.prompt, args.frames, args.long, context=args.context, chunk=args.chunk,
                               stride=args.stride, strength=strength, seed=args.seed, image=images.get("image"), **sampling)
    else:
        frames = pipe(args.prompt, num_frames=args.frames, seed=args.seed, video=video, strength=strength, **images,
                      camera=args.camera, restore_detail=args.restore_detail, **sampling)
    out = write_mp4(frames, args.output, fps=args.fps)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
    if args.gif:
        print(f"wrote {write_gif(frames, args.gif, fps=args.fps, scale=4)}")


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM (`kill`, schedulers preempting a job) and SIGINT stop training the way Ctrl-C does:
    a checkpoint of the current step, then a one-line message. A shell starts background jobs with
    SIGINT ignored; `kill -INT` should still stop them cleanly. Inside a training loop the signal
    asks the loop to stop after its current step (kinema.train.trainer.STOP); elsewhere, or at a
    second signal, it interrupts at once. The previous handlers come back after."""
    import signal

    from kinema.train.trainer import STOP

    def interrupt(signum, frame):
        if not STOP.ask():
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_dir_of(args: argparse.Namespace) -> Path | None:
    """The run directory `kinema train` will use, read without torch: --run-dir, else the recipe's
    `run_dir` (None when the recipe cannot be read here; its loader reports why later)."""
    if args.run_dir:
        return Path(args.run_dir)
    import yaml

    try:
        run_dir = yaml.safe_load(Path(args.config).read_text()).get("run_dir")
    except Exception:
        return None
    return Path(run_dir) if isinstance(run_dir, str) else None


def _train(args: argparse.Namespace) -> None:
    from kinema.train.run_dir import check_free

    run_dir = _run_dir_of(args)
    if run_dir is not None and os.environ.get("RANK", "0") == "0":
        check_free(run_dir)  # before importing torch: a second training on one directory fails within a second
    from kinema.train import dist
    from kinema.train.recipe import load_recipe, run

    dist.init_from_env()  # torchrun: DDP over its processes
    overrides = {}
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    if args.export_dir:
        overrides["export_dir"] = args.export_dir
    for key in ("device", "precision"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.compile:
        overrides["compile"] = True
    if args.data:
        overrides["dit"] = {"data": args.data}
    recipe = load_recipe(args.config, overrides)
    if args.arch:
        recipe.model.dit = arch_config(args.arch, recipe.model.dit)
    with _stop_on_signals():
        try:
            out = run(recipe, resume=args.resume, stage=args.stage)
        except BaseException:
            dist.abort()  # another process may still wait in a collective: do not wait for it
            raise
    main_process = dist.is_main()
    dist.finish()
    if out is not None and main_process:
        print(f"model written to {out}; try: kinema generate \"a red circle moving right\" --model {out}")


def _prepare(args: argparse.Namespace) -> None:
    import os

    from kinema.data.latent_cache import ClipSettings, prepare
    from kinema.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, precision=args.precision)
    cfg = pipe.cfg
    try:
        sizes = tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")) if args.sizes else ()
        durations = tuple(int(v) for v in args.durations.split(",")) if args.durations else ()
    except ValueError:
        raise KinemaError(f"--sizes {args.sizes!r} / --durations {args.durations!r}: write e.g. --sizes 64x64,48x80 "
                          f"--durations 9,17") from None
    settings = ClipSettings(frames=args.frames or cfg.frames, height=args.height or cfg.height, width=args.width or cfg.width,
                            fps=args.fps, crop=args.crop, seed=args.seed, sizes=sizes, durations=durations)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # torchrun: each rank its share
    counts = prepare(args.data, args.out, pipe.vae, pipe.text_encoder, cfg.text, settings, runtime=pipe.runtime,
                     rank=rank, world=world, shard_size=args.shard_size)
    print(f"rank {rank}: {counts['encoded']} clips encoded, {counts['already']} already in {args.out}, "
          f"{counts['skipped']} files skipped; train with: kinema train RECIPE --data {args.out}")


# what a recipe adds to any family (image and camera conditions, AnimateDiff's motion modules, the
# frame stride): `--arch` keeps them, so `kinema train configs/shapes_i2v.yaml --arch wan` is an
# image-to-video wan
RECIPE_CONDITIONS = ("frame_cond", "hold_given", "motion_modules", "camera", "camera_render", "frame_stride")


def arch_config(name: str, current):
    """A DiT family preset (config.DIT_PRESETS) fitted to the recipe's latent channels and text
    width, with the recipe's conditions (RECIPE_CONDITIONS)."""
    import dataclasses

    from kinema.config import DIT_PRESETS

    if name not in DIT_PRESETS:
        raise KinemaError(f"unknown --arch {name!r}; choose from {', '.join(DIT_PRESETS)}")
    return dataclasses.replace(DIT_PRESETS[name], in_channels=current.in_channels, text_dim=current.text_dim,
                               **{k: getattr(current, k) for k in RECIPE_CONDITIONS})


def _write_json(path: str | None, data) -> None:
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2))
    except OSError as e:
        raise KinemaError(f"cannot write {path} ({e.strerror}); choose a writable --json path") from None
    print(f"wrote {path}")


def _eval(args: argparse.Namespace) -> None:
    from kinema.eval.report import evaluate_shapes, format_table

    result = evaluate_shapes(args.model, seeds=args.seeds, steps=args.steps, guidance=args.guidance,
                             sampler=args.sampler, shift=args.shift, batch_size=args.batch_size,
                             device=args.device, precision=args.precision, compile=args.compile, given=args.given)
    print(format_table(result))
    _write_json(args.json, result)


def _eval_scenes(args: argparse.Namespace) -> None:
    from kinema.eval.scene_report import evaluate_scenes, format_scene_table

    result = evaluate_scenes(args.model, clips=args.clips, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                             shift=args.shift, batch_size=args.batch_size, device=args.device, precision=args.precision)
    print(format_scene_table(result))
    _write_json(args.json, result)


def _eval_vae(args: argparse.Namespace) -> None:
    from kinema.eval.recon import evaluate_vae, format_vae_table

    results = [evaluate_vae(m, clips=args.clips, frames=args.frames, device=args.device, precision=args.precision,
                            world=args.world) for m in args.model]
    print(format_vae_table(results))
    _write_json(args.json, results)


def _eval_camera(args: argparse.Namespace) -> None:
    from kinema.eval.camera_report import evaluate_camera, format_camera_table

    if args.clips < 1:
        raise KinemaError(f"--clips {args.clips}: use 1 or more")
    result, kept = evaluate_camera(args.model, clips=args.clips, use_camera=not args.no_camera,
                                   restore_detail=args.restore_detail, keep=4 if args.html else 0, **_sampling(args))
    _report(args, f"kinema eval camera: {args.model}", format_camera_table(result), result, kept)


def _sampling(args: argparse.Namespace) -> dict:
    """The sampling and runtime settings of an eval that generates (`_oracle_eval_args`)."""
    return dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, shift=args.shift, device=args.device,
                precision=args.precision)


def _report(args: argparse.Namespace, title: str, table: str, result: dict, kept: dict) -> None:
    """Print an eval's table, then write its --json and --html when asked."""
    print(table)
    _write_json(args.json, result)
    _write_html(args.html, title, result, kept)


def _eval_suite(args: argparse.Namespace) -> None:
    from kinema.eval.suite import format_suite, run_suite

    if args.seeds < 1 or args.clips < 1:
        raise KinemaError("--seeds and --clips must be at least 1")
    result, kept = run_suite(args.name, args.model, seeds=args.seeds, clips=args.clips, encoder=args.encoder,
                             i3d=args.i3d, clip=args.clip, **_sampling(args))
    _report(args, f"kinema eval suite {args.name}: {args.model}", format_suite(result), result, kept)


def _train_encoder(args: argparse.Namespace) -> None:
    from kinema.eval.video_encoder import train_encoder

    if args.steps < 1 or args.batch_size < 2:
        raise KinemaError("--steps must be at least 1 and --batch-size at least 2 (a contrastive batch)")
    with _stop_on_signals():
        out = train_encoder(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, resume=args.resume,
                            device=args.device, precision=args.precision)
    print(f"wrote {out}")


def _eval_temporal(args: argparse.Namespace) -> None:
    from kinema.eval.videos import evaluate_videos, format_temporal_table

    result, kept = evaluate_videos(args.paths, fps=args.fps, keep=6 if args.html else 0)
    _report(args, f"kinema eval temporal: {' '.join(args.paths)}", format_temporal_table(result), result, kept)


def _eval_distances(args: argparse.Namespace) -> None:
    from kinema.eval.videos import evaluate_distances

    if args.i3d and args.encoder:
        raise KinemaError("give --i3d (FVD) or --encoder (kinema's video encoder), not both: one run, one extractor")
    if args.i3d:
        from kinema.eval.i3d import load_i3d

        extractor = load_i3d(args.i3d)
    else:
        from kinema.eval.video_encoder import SHIPPED, load_encoder

        extractor = load_encoder(args.encoder or SHIPPED)
    result = evaluate_distances([args.real], [args.generated], extractor)
    print(f"{result['generated']['clips']} generated against {result['real']['clips']} real videos, "
          f"features of {extractor.spec.name}:")
    print("\n".join(f"  {k} {v:.4f}" for k, v in result["distances"].items()))
    n = min(result["generated"]["clips"], result["real"]["clips"])
    if n < 2 * extractor.spec.dim:
        print(f"note: {n} clips for {extractor.spec.dim} features: at this size the Fréchet distance is mostly sampling "
              "noise; compare it with two real sets of the same size (the real-versus-real floor), or use more clips")
    if args.json:
        _write_json(args.json, result)


def _write_html(path: str | None, title: str, result: dict, clips: dict) -> None:
    if path:
        from kinema.eval.html import write_report

        settings = result.get("settings", {k: v for k, v in result.items() if k not in ("summary", "rows")})
        print(f"wrote {write_report(path, title, result['summary'], settings, clips)}")


def _info(args: argparse.Namespace) -> None:
    if args.presets:
        from kinema.config import DIT_PRESETS, VAE_PRESETS

        for name, v in VAE_PRESETS.items():
            flat = [i for i in range(len(v.channel_mult)) if v.kernel_t(i) == 1]
            print(f"vae {name:18s} {v.time_compression}x{v.space_compression}x{v.space_compression}, "
                  f"{v.latent_channels} channels, widths {[v.base_channels * m for m in v.channel_mult]}"
                  + (f", 2D at levels {flat}" if flat else ""))
        from kinema.dit.transformer import MMDiT

        for name, d in DIT_PRESETS.items():
            params = sum(p.numel() for p in MMDiT(d).parameters()) / 1e6
            print(f"dit {name:18s} {params:6.2f} M params, dim {d.dim}, {d.heads} heads, blocks {d.dual_blocks} dual + "
                  f"{d.single_blocks} single + {d.cross_blocks} cross, attention {'/'.join(d.attention)}, positions {d.positions}")
        return
    from kinema.pipelines.pipeline import describe

    print(describe(args.model))
    print(describe_runtime(args.device, args.precision))


def describe_runtime(device: str, precision: str) -> str:
    """What `kinema generate` would run on with these flags, and why."""
    import torch

    from kinema.runtime import cpu_bf16, resolve_runtime

    rt = resolve_runtime(device, precision)
    probe = cpu_bf16()
    flags = ", ".join(probe.flags) or "none reported"
    lines = [f"runtime: {rt.describe()}",
             f"  torch {torch.__version__}; CUDA GPUs visible: {torch.cuda.device_count() if torch.cuda.is_available() else 0}",
             f"  CPU bf16: {'fast' if probe.native else 'slow'} ({probe.how}; bf16 CPU flags: {flags})",
             "  force another with --device cpu|cuda|cuda:N|mps and --precision fp32|bf16|fp16"]
    return "\n".join(lines)


def _oracle_eval_args(p: argparse.ArgumentParser, model: str, model_help: str | None = None) -> None:
    """The sampling settings, model, output and runtime of an eval that generates and judges clips."""
    p.add_argument("--model", default=model, help=model_help)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    p.add_argument("--sampler", default="euler")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    _runtime_args(p)


def _runtime_args(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default, help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default=default,
                   help="auto (bf16 where the hardware runs it fast, else fp32), bf16, fp16 (GPU) or fp32 (default auto)")


class _Parser(argparse.ArgumentParser):
    """argparse with kinema's error form: one line, exit 2 (not the usage block above it)."""

    def error(self, message: str):
        self.exit(2, f"kinema: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from kinema.pipelines.registry import DEFAULT_MODEL

    p = _Parser(prog="kinema", description="kinema: text-to-video with a causal VAE and an MM-DiT")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a video from a text prompt")
    g.add_argument("prompt", help='e.g. "a red circle moving right"')
    g.add_argument("-o", "--output", default="outputs/video.mp4", help="MP4 path (default: outputs/video.mp4)")
    g.add_argument("--gif", default=None, help="also write a GIF here")
    g.add_argument("--frames", type=int, default=17, help="frame count, 1 + 4k (default 17)")
    g.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    g.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's, 5 unless its config says otherwise)")
    g.add_argument("--sampler", default="euler", help="euler or heun (default euler)")
    g.add_argument("--shift", type=float, default=None, help="timestep shift, > 1 favours noise (default: the model's)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-verify", action="store_true",
                   help="skip checking the model's files against its manifest (SHA-256)")
    g.add_argument("--video", default=None, metavar="PATH",
                   help="video-to-video: start from this clip (the model's size; its first --frames frames)")
    g.add_argument("--strength", type=float, default=None,
                   help="with --video: how far it is noised, 0 (kept) to 1 (ignored) (default 0.6)")
    g.add_argument("--image", default=None, metavar="PATH",
                   help="image-to-video: this picture is the first frame (cropped and resized to the model's size, with a note)")
    g.add_argument("--end-image", default=None, metavar="PATH", help="this picture is the last frame")
    g.add_argument("--camera", default=None, metavar="MOTIONS",
                   help="camera control (a model trained with it): pan-left, pan-right, pan-up, pan-down, zoom-in, "
                        "zoom-out, rotate-clockwise, rotate-counter-clockwise; several joined by commas")
    g.add_argument("--restore-detail", action="store_true",
                   help="with --image on a camera-render model: add back the picture's detail that the VAE loses, "
                        "wherever the first frame saw the content (frame 0 becomes the image itself)")
    g.add_argument("--long", default=None, metavar="ROUTE",
                   help="a clip longer than the model's: ar (autoregressive chunks, each continuing the last), "
                        "forcing (diffusion forcing: a frame-causal model rolls forward, needs one trained for it), "
                        "keyframe (a coarse clip at --stride, then interpolation between its keyframes) or coarse2fine "
                        "(the coarse clip blended in time, then refined); these two need a frame-stride model")
    g.add_argument("--context", type=int, default=1,
                   help="with --long ar: latent frames each chunk continues from (default 1: the last frame)")
    g.add_argument("--chunk", type=int, default=1,
                   help="with --long forcing: new latent frames per chunk (default 1)")
    g.add_argument("--stride", type=int, default=4,
                   help="with --long keyframe or coarse2fine: real frames between two frames of the coarse clip (default 4)")
    g.add_argument("--fps", type=int, default=8)
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or directory (default {DEFAULT_MODEL})")
    _runtime_args(g)
    g.add_argument("--compile", action="store_true", help="torch.compile the denoiser (pays off on GPUs)")
    g.set_defaults(func=_generate)

    t = sub.add_parser("train", help="train a model from a YAML recipe (VAE, then denoiser)")
    t.add_argument("config", help="recipe, e.g. configs/shapes.yaml")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoints in run_dir")
    t.add_argument("--stage", default="all", help="vae (the VAE and its decoder fine-tune), cache (then the denoiser's latent and text cache, "
                   "shared by any architecture) or all (default)")
    t.add_argument("--run-dir", default=None, help="override the recipe's run_dir")
    t.add_argument("--export-dir", default=None, help="override where the finished model is written")
    t.add_argument("--arch", default=None, metavar="NAME",
                   help="train this denoiser family instead of the recipe's, with the recipe's conditions (image, camera, "
                        "motion modules, frame stride); kinema info --presets lists them")
    _runtime_args(t, default=None)  # None: the recipe's device / precision (auto unless it says otherwise)
    t.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    t.add_argument("--data", default=None, metavar="CACHE",
                   help="train the denoiser on a cache made by `kinema prepare` instead of the recipe's world")
    t.set_defaults(func=_train)

    pr = sub.add_parser("prepare", help="encode a folder of your videos and images into a latent and text cache")
    pr.add_argument("data", help="folder of videos (.mp4 .webm .mov .mkv .avi .gif) and images, captions in captions.jsonl or .txt")
    pr.add_argument("--out", required=True, help="cache directory (resumable: run the same command again to continue)")
    pr.add_argument("--model", default=DEFAULT_MODEL, help="the model whose VAE and text encoder encode the data")
    pr.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's; 1 + r k)")
    pr.add_argument("--height", type=int, default=None, help="default: the model's")
    pr.add_argument("--width", type=int, default=None, help="default: the model's")
    pr.add_argument("--fps", type=float, default=8.0, help="frames per second sampled from each video")
    pr.add_argument("--crop", default="center", choices=("center", "resize", "pad"))
    pr.add_argument("--seed", type=int, default=0, help="draws each video's start")
    pr.add_argument("--sizes", default=None, metavar="HxW,...",
                    help="size buckets, e.g. 64x64,48x80,80x48: each file takes the one nearest its aspect ratio")
    pr.add_argument("--durations", default=None, metavar="N,...",
                    help="length buckets in frames (1 + r k each), e.g. 9,17: each video takes the longest it can give")
    pr.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    _runtime_args(pr)
    pr.set_defaults(func=_prepare)

    e = sub.add_parser("eval", help="evaluate a model")
    esub = e.add_subparsers(dest="suite", required=True)
    es = esub.add_parser("shapes", help="Shapes oracle: colour, shape, direction, object count")
    es.add_argument("--seeds", type=int, default=4, help="samples per prompt (default 4)")
    _oracle_eval_args(es, DEFAULT_MODEL)
    es.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    es.add_argument("--given", default=None, metavar="first|ends",
                    help="image-to-video: give each clip the first (or first and last) frame of a rendered clip of its prompt")
    es.set_defaults(func=_eval)
    sc = esub.add_parser("scenes", help="Shapes level 2 oracle: per-object attributes, binding, object count")
    sc.add_argument("--clips", type=int, default=96, help="seen scenes (half one object, half two); plus clips/4 held-out")
    _oracle_eval_args(sc, DEFAULT_MODEL)
    sc.set_defaults(func=_eval_scenes)
    ev = esub.add_parser("vae", help="VAE reconstruction: PSNR, SSIM, object PSNR, oracle on reconstructions")
    ev.add_argument("--model", nargs="+", default=[DEFAULT_MODEL],
                    help="model directories, VAE run directories (runs/x/vae) or checkpoints; several are compared")
    ev.add_argument("--clips", type=int, default=64)
    ev.add_argument("--frames", type=int, default=None,
                    help="frames per clip (default: each VAE's longest up to 17, 1 + r k: 17 at 4x and 8x, 13 at 6x)")
    ev.add_argument("--world", default="shapes", choices=("shapes", "scenes", "photos", "photos-train"),
                    help="shapes: level-1 clips and oracle; scenes: level 2 (two objects, pace, binding); "
                         "photos: held-out photographs under a moving camera (no oracle); photos-train: new "
                         "camera paths over the training photographs (against photos: the generalisation gap)")
    ev.add_argument("--json", default=None)
    _runtime_args(ev)
    ev.set_defaults(func=_eval_vae)
    ec = esub.add_parser("camera", help="image-to-video and camera control on held-out photographs: first-frame and "
                                        "clip PSNR against the true camera path, the camera oracle's verdict")
    ec.add_argument("--clips", type=int, default=32, help="held-out photo clips (default 32)")
    ec.add_argument("--no-camera", action="store_true", help="give the first frame only, not the camera path")
    ec.add_argument("--restore-detail", action="store_true",
                    help="a camera-render model's clips with the render's detail added back (kinema generate --restore-detail)")
    ec.add_argument("--html", default=None, help="also write a self-contained HTML report here")
    _oracle_eval_args(ec, "world", "a model directory; world: the true clips (the ceiling, the default); still: the "
                                   "given first frame repeated (a camera that does not move); warp: it moved along "
                                   "the true path (the render a dit.camera_render model reads)")
    ec.set_defaults(func=_eval_camera)
    su = esub.add_parser("suite", help="a named suite (shapes, photos): every applicable metric with 95%% intervals, "
                                       "JSON and an HTML report (docs/evaluation.md)")
    su.add_argument("name", help="shapes (the Shapes prompts: oracle, temporal metrics, distances) or photos "
                                 "(image-to-video and camera control on held-out photographs)")
    su.add_argument("--seeds", type=int, default=1, help="shapes: seeds per prompt (default 1)")
    su.add_argument("--clips", type=int, default=32, help="photos: held-out clips (default 32)")
    su.add_argument("--encoder", default=None, help="shapes: the video encoder for the distances and retrieval: the shipped "
                                                  "one by default, a directory from `kinema eval train-encoder`, or none")
    su.add_argument("--i3d", default=None, help="shapes: a Kinetics-400 I3D file you have (.pt, .safetensors, or "
                                                "DeepMind's variables as .npz) for FVD beside the encoder's distances")
    su.add_argument("--clip", default=None, help="shapes: a local transformers CLIP directory for CLIPSim-V "
                                                 "(kinema ships none)")
    su.add_argument("--html", default=None, help="also write a self-contained HTML report here")
    _oracle_eval_args(su, DEFAULT_MODEL)
    su.set_defaults(func=_eval_suite)
    tr = esub.add_parser("train-encoder", help="train kinema's video encoder for offline distances and retrieval "
                                               "(contrastive against the frozen MiniLM; docs/evaluation.md)")
    tr.add_argument("--out", required=True, help="directory for its checkpoints and the exported encoder")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    _runtime_args(tr)
    tr.set_defaults(func=_train_encoder)
    ed = esub.add_parser("distances", help="FVD (with an I3D file you have) or kinema's encoder distances, KVD "
                                           "and JEDi's form between two folders of videos (docs/evaluation.md)")
    ed.add_argument("real", help="a folder of real videos, or one file")
    ed.add_argument("generated", help="a folder of generated videos, or one file")
    ed.add_argument("--i3d", default=None, help="a Kinetics-400 I3D file (.pt, .safetensors, or DeepMind's "
                                                "variables as .npz): the distance is then FVD")
    ed.add_argument("--encoder", default=None, help="kinema's video encoder instead (default: the shipped one)")
    ed.add_argument("--json", default=None, help="also write the result here")
    ed.set_defaults(func=_eval_distances)
    et = esub.add_parser("temporal", help="temporal metrics of video files: flicker, motion smoothness, frame "
                                          "consistency, motion magnitude, dynamic degree (OpenCV flow; docs/evaluation.md)")
    et.add_argument("paths", nargs="+", help="video files, or folders of them (.mp4, .gif, ...)")
    et.add_argument("--fps", type=float, default=8.0, help="the clips' frame rate, for the dynamic threshold (default 8)")
    et.add_argument("--json", default=None)
    et.add_argument("--html", default=None, help="also write a self-contained HTML report here")
    et.set_defaults(func=_eval_temporal)

    i = sub.add_parser("info", help="describe a model and the device / precision it would run with")
    i.add_argument("--model", default=DEFAULT_MODEL)
    i.add_argument("--presets", action="store_true", help="list the VAE and DiT presets instead")
    _runtime_args(i)
    i.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except KinemaError as e:
        print(f"kinema: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kinema info --presets | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk wherever it shows (a log line, a cache, a sample, an output): checkpoints and
        # outputs are written to a temporary name and renamed, so what was there before is intact
        print(f"kinema: error: {e.strerror} writing {e.filename or 'a file'}: make room and run the command again "
              f"(a training continues from its last checkpoint with --resume)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
