"""``python -m rlzoo.watch <run dir> [out=<run dir>/agent.gif episodes=1 member=0 model=final epsilon=0 fps=30 every=1
max_steps=1000 seed=0 height=240 device=cpu]``

Plays episodes with a trained run's saved model (as ``rlzoo.evaluate`` loads it) and writes an animation:
each frame shows the game beside a live plot of every action's Q-value over the episode so far, the
action taken marked. ``out`` ending in ``.gif`` writes a GIF, ``.mp4`` an H.264 video (imageio's ffmpeg
plugin, ``pip install imageio-ffmpeg``). ``every=k`` keeps every k-th step's frame (smaller files);
``max_steps`` ends an episode early. The animation has ``ceil(steps / every)`` frames, ``steps`` being the
steps played over all episodes.

Frames come from: rlzoo's CartPole (drawn from its state), MinAtar (the channel grid, one colour per
channel), Atari (the newest of the stacked 84x84 frames the agent sees), and any other gymnasium id through
its ``render_mode="rgb_array"`` rendering.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from rlzoo.errors import ConfigError

MINATAR_ACTIONS = ("noop", "left", "up", "right", "down", "fire")  # minatar.Environment's action indices
CARTPOLE_ACTIONS = ("left", "right")
CHANNEL_COLOURS = np.array([(230, 85, 13), (49, 130, 189), (116, 196, 118), (253, 208, 162), (158, 154, 200),
                            (255, 255, 153), (214, 39, 40), (23, 190, 207), (188, 189, 34), (227, 119, 194)],
                           dtype=np.uint8)


# -- frames of the game ---------------------------------------------------------------------------------------
def draw_cartpole(obs, height: int = 240) -> np.ndarray:
    """An RGB picture of CartPole's state ``[x, x_dot, theta, theta_dot]`` (gymnasium's geometry: the track
    spans x in [-2.4, 2.4], the pole is 1.0 long)."""
    from PIL import Image, ImageDraw
    width = int(round(height * 4 / 3))
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    scale = width / 4.8 / 1.1  # world units -> pixels, a margin at both ends
    track_y = int(height * 0.72)
    x, theta = float(obs[0]), float(obs[2])
    cx = width / 2 + x * scale
    d.line([(0, track_y), (width, track_y)], fill=(0, 0, 0), width=1)
    cart_w, cart_h = 0.5 * scale, 0.3 * scale
    d.rectangle([cx - cart_w / 2, track_y - cart_h / 2, cx + cart_w / 2, track_y + cart_h / 2], fill=(40, 40, 40))
    pole = 1.0 * scale
    tip = (cx + pole * math.sin(theta), track_y - pole * math.cos(theta))
    d.line([(cx, track_y), tip], fill=(202, 152, 101), width=max(int(0.1 * scale), 3))
    r = max(int(0.05 * scale), 2)
    d.ellipse([cx - r, track_y - r, cx + r, track_y + r], fill=(129, 132, 203))
    return np.asarray(img)


def draw_grid(obs, height: int = 240) -> np.ndarray:
    """MinAtar's ``[C, H, W]`` 0/1 channels as an RGB grid: channel ``c`` in colour ``c``, black background."""
    obs = np.asarray(obs)
    rgb = np.zeros((*obs.shape[1:], 3), dtype=np.uint8)
    for c in range(obs.shape[0]):
        rgb[obs[c] > 0] = CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)]
    cell = max(height // obs.shape[1], 1)
    big = rgb.repeat(cell, axis=0).repeat(cell, axis=1)
    return _fit(big, height)


def draw_pixels(obs, height: int = 240) -> np.ndarray:
    """The newest frame of a ``[stack, H, W]`` grayscale observation, scaled to ``height``."""
    frame = np.asarray(obs)[-1]
    return _fit(np.repeat(frame[..., None], 3, axis=-1), height)


def _fit(rgb: np.ndarray, height: int) -> np.ndarray:
    """Resize ``rgb`` to ``height`` rows (nearest neighbour; aspect kept)."""
    from PIL import Image
    if rgb.shape[0] == height:
        return rgb
    width = max(int(round(rgb.shape[1] * height / rgb.shape[0])), 1)
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.NEAREST))


class QPlot:
    """Each action's Q-value over one episode, drawn on a matplotlib Agg canvas with fixed axes (the whole
    episode's steps and Q-range), so that consecutive frames differ only where the curves grow: GIFs stay small.
    The axes, labels and legend are drawn once; every frame blits the curves up to its step onto them."""

    def __init__(self, actions, q: np.ndarray, title: str, height: int = 240, width: int = 320):
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        dpi = 80
        self.fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = ax = self.fig.add_axes((0.17, 0.14, 0.79, 0.68))
        self.q, self.actions = np.asarray(q, dtype=float), list(actions)
        steps = np.arange(len(self.q))
        lo, hi = float(self.q.min()), float(self.q.max())
        pad = max((hi - lo) * 0.08, 1e-3 + 0.02 * abs(hi))
        ax.set_xlim(0, max(len(self.q) - 1, 1))
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("step", fontsize=8, labelpad=1)
        ax.set_ylabel("Q(s, a)", fontsize=8, labelpad=1)
        ax.tick_params(labelsize=7, pad=1)
        self.fig.suptitle(title, fontsize=9, y=0.98)
        self.lines = [ax.plot(steps[:0], steps[:0], color=f"C{a}", lw=1.5, label=name, animated=True)[0]
                      for a, name in enumerate(self.actions)]
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=min(len(self.actions), 6), fontsize=7,
                  frameon=False, borderaxespad=0.1, handlelength=1.2, columnspacing=0.8)
        self.marker = ax.plot([], [], "o", color="k", ms=5, animated=True)[0]
        self.text = ax.text(0.98, 0.04, "", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                            animated=True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        self.steps = steps

    def draw(self, t: int, action: int, total: float) -> np.ndarray:
        """The picture at step ``t`` (taking ``action``, ``total`` reward so far): ``[H, W, 3]`` uint8."""
        self.canvas.restore_region(self.background)
        for a, line in enumerate(self.lines):
            line.set_data(self.steps[:t + 1], self.q[:t + 1, a])
            self.ax.draw_artist(line)
        self.marker.set_data([t], [self.q[t, action]])
        self.ax.draw_artist(self.marker)
        self.text.set_text(f"step {t}  return {total:g}  -> {self.actions[action]}")
        self.ax.draw_artist(self.text)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


# -- playing ------------------------------------------------------------------------------------------------------
def _renderer(target: str, spec, envs, height: int):
    """``(draw(obs) -> rgb, action names)`` for the run's environment factory."""
    if target.endswith("make_cartpole"):
        return (lambda obs: draw_cartpole(obs, height)), CARTPOLE_ACTIONS
    if target.endswith("make_minatar_env"):
        names = [MINATAR_ACTIONS[a] for a in envs.env.envs[0].unwrapped.actions]
        return (lambda obs: draw_grid(obs, height)), names
    if target.endswith("make_gym_env"):
        member = envs.env.envs[0]
        names = None
        meanings = getattr(member.unwrapped, "get_action_meanings", None)
        if callable(meanings):
            names = [m.lower() for m in meanings()]

        def draw(obs):
            frame = member.render()
            if frame is None or np.asarray(frame).ndim != 3:
                raise ConfigError(f"{spec.name} gives no rgb_array rendering, so it cannot be watched")
            return _fit(np.asarray(frame, dtype=np.uint8)[..., :3], height)
        return draw, names or [str(a) for a in range(spec.num_actions)]
    if spec.pixels:
        return (lambda obs: draw_pixels(obs, height)), [str(a) for a in range(spec.num_actions)]
    raise ConfigError(f"rlzoo.watch cannot draw {spec.name} (environment factory {target})")


def _even(frame: np.ndarray, block: int = 16) -> np.ndarray:
    """Pad to multiples of ``block`` pixels (video encoders want them)."""
    h, w = frame.shape[:2]
    ph, pw = -h % block, -w % block
    if ph or pw:
        frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), constant_values=255)
    return frame


def play(agent, envs, spec, draw, actions, episodes: int = 1, epsilon: float = 0.0, rng=None, env_seed: int = 0,
         max_steps: int = 1000, every: int = 1, height: int = 240):
    """Play ``episodes`` episodes with one member (``envs`` of one env); returns ``(frames, returns, steps)``:
    a frame every ``every`` steps (game beside Q-plot), each episode's return, the steps played."""
    rng = rng if rng is not None else np.random.default_rng(0)
    frames, returns, t = [], [], 0
    for episode in range(1, episodes + 1):
        obs, _ = envs.reset(seed=[int(env_seed) + episode - 1])
        qs, acts, totals, games, total = [], [], [], {}, 0.0
        for k in range(max_steps):
            q = np.asarray(agent.q_values(obs), dtype=float)[0]
            if rng.random() < epsilon:
                action = int(rng.integers(len(q)))
            else:
                action = int(np.flatnonzero(q == q.max())[0])
            if (t + k) % every == 0:
                games[k] = draw(obs[0])  # the state the agent acts on (rendered now: the env moves on)
            qs.append(q), acts.append(action), totals.append(total)
            obs, reward, terminated, truncated, info = envs.step(np.array([action]))
            total += float(reward[0])
            if bool(info.get("game_over", terminated | truncated)[0]):
                break
        plot = QPlot(actions, np.array(qs), f"episode {episode}: return {total:g}", height=height,
                     width=int(height * 4 / 3))
        for k, game in games.items():
            chart = plot.draw(k, acts[k], totals[k])
            if game.shape[0] != chart.shape[0]:
                game = _fit(game, chart.shape[0])
            frames.append(_even(np.concatenate([game, chart], axis=1)))
        t += len(qs)
        returns.append(total)
    return frames, returns, t


def write_gif(path: Path, frames, fps: float) -> None:
    """A GIF with one palette for all frames (from a sample of them), so that Pillow stores each frame as its
    difference from the previous one: a few kB per frame where only the curves and the game move."""
    from PIL import Image
    sample = frames[:: max(len(frames) // 16, 1)]
    palette = Image.fromarray(np.concatenate(sample, axis=0)).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0,
                   optimize=False)


def write_animation(path: Path, frames, fps: float) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        write_gif(path, frames, fps)
    elif suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError("out=*.mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or write a .gif)") from None
        import imageio.v2 as iio2
        with iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                             macro_block_size=16) as writer:
            for f in frames:
                writer.append_data(f)
    else:
        raise ConfigError(f"out must end in .gif or .mp4, got {str(path)!r}")


def watch_run(run_dir, out: str | None = None, episodes: int = 1, member: int = 0, model: str = "final",
              epsilon: float = 0.0, fps: float = 30.0, every: int = 1, max_steps: int = 1000, seed: int = 0,
              height: int = 240, device: str = "cpu", stream=None) -> dict:
    """Write the animation (``out``; None: ``<run dir>/agent.gif``); returns ``{"path", "frames", "returns",
    "steps"}``."""
    from rlzoo.evaluate import load_player, run_config

    stream = stream or sys.stdout
    run_dir = Path(run_dir)
    for key, value, low in (("episodes", episodes, 1), ("every", every, 1), ("max_steps", max_steps, 1),
                            ("height", height, 32)):
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
    out = out if out is not None else str(run_dir / "agent.gif")
    if Path(out).suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"out must end in .gif or .mp4, got {out!r}")
    target = str(run_config(run_dir).env.get("_target_", ""))
    overrides = {"kwargs": {"render_mode": "rgb_array"}} if target.endswith("make_gym_env") else None
    agent, envs, spec, _, seeds, meta = load_player(run_dir, model, str(member), device, env_overrides=overrides)
    started = time.perf_counter()
    try:
        draw, actions = _renderer(target, spec, envs, height)
        frames, returns, steps = play(agent, envs, spec, draw, actions, episodes=episodes, epsilon=epsilon,
                                      rng=np.random.default_rng([seeds[0], 7, seed]), env_seed=seed * 1000 + seeds[0],
                                      max_steps=max_steps, every=every, height=height)
    finally:
        envs.close()
    path = Path(out)
    write_animation(path, frames, fps)
    print(f"rlzoo.watch: {len(frames)} frames ({steps} steps, returns {', '.join(f'{r:g}' for r in returns)}) "
          f"of seed {seeds[0]}'s {model} model -> {path} ({path.stat().st_size / 1e6:.2f} MB, "
          f"{time.perf_counter() - started:.1f} s)", file=stream)
    return {"path": path, "frames": len(frames), "returns": returns, "steps": steps}


DEFAULTS = {"out": None, "episodes": 1, "member": 0, "model": "final", "epsilon": 0.0, "fps": 30.0,
            "every": 1, "max_steps": 1000, "seed": 0, "height": 240, "device": "cpu"}


def main(argv: list[str] | None = None) -> None:
    from rlzoo.evaluate import parse_args
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_dir, args = parse_args(argv, DEFAULTS, __doc__)
        watch_run(run_dir, **args)
    except ConfigError as e:
        print(f"rlzoo.watch: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
