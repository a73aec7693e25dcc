"""Characters rendered from the machine's installed fonts: printed faces (the "natural" domain) and
handwriting / script faces (a real style shift, like ImageNet → ImageNet-Sketch), MNIST-like 28×28.

Faces come from TrueType / OpenType files (Debian ``fonts-*`` packages) and from the Hershey stroke fonts
(``hershey-fonts-data``). Dotted, ruled, outline-only and symbol faces are left out, and a face is kept only
when it has a non-empty glyph for every character asked for. Rendering is deterministic per seed: each image
draws its face, size, position, rotation, stroke width and blur from ``numpy.random.default_rng(seed)``.

Hershey fonts acknowledgement (their licence asks for it to be distributed with the data): the Hershey Fonts
were originally created by Dr. A. V. Hershey while working at the U. S. National Bureau of Standards; the
format of the font data was originally created by James Hurt, Cognition, Inc.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxapex.data.sources import HERSHEY_DIR, font_files

ALPHANUMERIC = string.ascii_uppercase + string.ascii_lowercase + string.digits
STYLES = ("printed", "handwriting")
# Path substrings (lower case) of the handwriting / script faces among the installed font packages.
HANDWRITING_KEYS = (
    "comic-neue",
    "ecolier",
    "femkeklaver",
    "fifthhorseman",  # fonts-dkg-handwriting
    "humor-sans",
    "isabella",
    "kristi",
    "leckerli",
    "lobster",
    "rufscript",
    "sjfonts",
    "staypuft",
    "z003",  # URW's Zapf Chancery clone
    "texgyrechorus",
)
# Ruled ("lignes"), dotted, outline-only, symbol and math faces: not characters a reader would write.
EXCLUDED_KEYS = ("lignes", "dotted", "outline", "d050000l", "standardsymbols", "math", "symbol", "awesome", "emoji")
HERSHEY_STYLES = {
    "printed": ("futural", "futuram", "rowmans", "rowmand", "rowmant", "timesr", "timesrb", "timesi", "timesib"),
    "handwriting": ("scripts", "scriptc", "cursive"),
}


@dataclasses.dataclass(frozen=True)
class FontFace:
    """One face: a font file (``kind="outline"``) or a Hershey ``.jhf`` stroke font (``kind="hershey"``)."""

    name: str
    path: Path
    kind: str
    style: str


def classify(path: Path) -> str | None:
    """``"handwriting"``, ``"printed"`` or None (left out) for a font file, from its path."""
    key = str(path).lower()
    if any(k in key for k in EXCLUDED_KEYS):
        return None
    return "handwriting" if any(k in key for k in HANDWRITING_KEYS) else "printed"


def _covers(path: Path, chars: str) -> bool:
    """Every character maps to a glyph with ink (cmap entry and a non-empty outline bounding box)."""
    import logging

    from fontTools.ttLib import TTFont, TTLibError
    from PIL import ImageFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # harmless table quirks of some packaged fonts

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
        if any(ord(c) not in cmap for c in chars):
            return False
        pil = ImageFont.truetype(str(path), 48)
    except (OSError, TTLibError, AssertionError):
        return False
    for c in chars:
        left, top, right, bottom = pil.getbbox(c)
        if right - left < 2 or bottom - top < 2:
            return False
    return True


@functools.cache
def parse_hershey(path: Path) -> tuple[tuple[tuple[tuple[int, int], ...], ...], ...]:
    """A ``.jhf`` file as glyphs (in file order: ASCII 32, 33, …) of strokes of (x, y) points, y downwards."""
    lines = Path(path).read_text(encoding="latin-1").splitlines()
    glyphs, i = [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        try:
            count = int(line[5:8])
        except ValueError:
            raise ValueError(f"{path}: line {i}: bad Hershey glyph header {line[:8]!r}") from None
        data = line[8:]
        while len(data) < 2 * count and i < len(lines):  # long glyphs continue on the next lines
            data += lines[i]
            i += 1
        strokes: list[list[tuple[int, int]]] = [[]]
        for j in range(2, 2 * count, 2):  # the first pair is the glyph's left / right extent
            pair = data[j : j + 2]
            if pair == " R":
                strokes.append([])
            else:
                strokes[-1].append((ord(pair[0]) - ord("R"), ord(pair[1]) - ord("R")))
        glyphs.append(tuple(tuple(s) for s in strokes if s))
    return tuple(glyphs)


def _hershey_covers(path: Path, chars: str) -> bool:
    glyphs = parse_hershey(path)
    return all(0 <= ord(c) - 32 < len(glyphs) and glyphs[ord(c) - 32] for c in chars)


@functools.lru_cache(maxsize=8)
def font_faces(style: str, chars: str = ALPHANUMERIC) -> tuple[FontFace, ...]:
    """Installed faces of ``style`` (``"printed"`` / ``"handwriting"``) that draw every one of ``chars``,
    sorted by name (font files first, then Hershey fonts)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    faces = [
        FontFace(path.stem, path, "outline", style)
        for path in font_files()
        if classify(path) == style and _covers(path, chars)
    ]
    for name in HERSHEY_STYLES[style]:
        path = HERSHEY_DIR / f"{name}.jhf"
        if path.is_file() and _hershey_covers(path, chars):
            faces.append(FontFace(f"hershey-{name}", path, "hershey", style))
    return tuple(faces)


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Augmentation ranges, each drawn uniformly per image. ``box``: side (pixels) of the square the glyph is
    scaled into (MNIST: 20); ``shift``: pixels the glyph's centre of mass moves from the image centre;
    ``rotation``: degrees; ``stroke``: extra stroke width as a fraction of the render size; ``blur``: Gaussian
    radius in output pixels."""

    image_size: int = 28
    box: tuple[float, float] = (16.0, 22.0)
    shift: float = 2.0
    rotation: float = 12.0
    stroke: tuple[float, float] = (0.0, 0.05)
    blur: tuple[float, float] = (0.0, 0.7)
    render_size: int = 96

    def __post_init__(self) -> None:
        if not 0 < self.box[0] <= self.box[1] <= self.image_size:
            raise ValueError(f"RenderConfig.box must satisfy 0 < low <= high <= image_size, got {self.box}")
        for field in ("stroke", "blur"):
            low, high = getattr(self, field)
            if not 0 <= low <= high:
                raise ValueError(f"RenderConfig.{field} must satisfy 0 <= low <= high, got {(low, high)}")


@functools.lru_cache(maxsize=512)
def _truetype(path: Path, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size)


def _draw_glyph(face: FontFace, char: str, *, size: int, stroke: float):
    """The glyph, white on black, on a large grayscale canvas (PIL image)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (3 * size, 3 * size), 0)
    draw = ImageDraw.Draw(canvas)
    if face.kind == "hershey":
        scale = size / 32.0  # Hershey capitals are about 21 units high
        width = max(1, int(round(size * (0.06 + stroke))))
        for stroke_points in parse_hershey(face.path)[ord(char) - 32]:
            points = [(1.5 * size + x * scale, 1.5 * size + y * scale) for x, y in stroke_points]
            if len(points) == 1:
                points = points * 2
            draw.line(points, fill=255, width=width, joint="curve")
    else:
        width = int(round(size * stroke))
        draw.text(
            (1.5 * size, 1.5 * size),
            char,
            fill=255,
            font=_truetype(face.path, size),
            anchor="mm",
            stroke_width=width,
            stroke_fill=255,
        )
    return canvas


def render_glyph(
    face: FontFace,
    char: str,
    *,
    box: float,
    shift: tuple[float, float],
    rotation: float,
    stroke: float,
    blur: float,
    config: RenderConfig,
) -> np.ndarray:
    """One character as float32 (image_size, image_size) in [0, 1], white ink on black like MNIST: drawn
    large, rotated, scaled to fit ``box``, placed by its centre of mass (+ ``shift``), blurred."""
    from PIL import Image, ImageFilter

    image = _draw_glyph(face, char, size=config.render_size, stroke=stroke)
    image = image.rotate(float(rotation), resample=Image.BILINEAR, expand=True, fillcolor=0)
    bbox = image.getbbox()
    if bbox is None:
        raise ValueError(f"font {face.path}: character {char!r} renders empty")
    image = image.crop(bbox)
    w, h = image.size
    factor = box / max(w, h)
    image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.LANCZOS)
    glyph = np.asarray(image, dtype=np.float32)
    ys, xs = np.indices(glyph.shape)
    mass = max(float(glyph.sum()), 1e-6)
    com_y, com_x = (ys * glyph).sum() / mass, (xs * glyph).sum() / mass
    n = config.image_size
    top = int(round(n / 2 - com_y + shift[1]))
    left = int(round(n / 2 - com_x + shift[0]))
    out = Image.new("L", (n, n), 0)
    out.paste(image, (left, top))
    if blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(float(blur)))
    array = np.asarray(out, dtype=np.float32)
    peak = array.max()
    return array / peak if peak > 0 else array


def render_characters(
    faces: Sequence[FontFace],
    chars: str,
    labels: Sequence[int],
    per_char: int,
    *,
    seed: int,
    config: RenderConfig = RenderConfig(),
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_char`` augmented renderings of each of ``chars`` (label ``labels[i]`` for ``chars[i]``), faces
    drawn uniformly from ``faces``. Returns ``(images float32 (n, S, S), labels int32 (n,), face index (n,))``,
    ordered char by char; the same seed gives the same arrays."""
    if len(chars) != len(labels):
        raise ValueError(f"{len(chars)} characters but {len(labels)} labels")
    if not faces:
        raise ValueError("no font faces to render with (see `jaxapex data status`)")
    rng = np.random.default_rng(seed)
    n = len(chars) * per_char
    face_idx = rng.integers(len(faces), size=n)
    box = rng.uniform(*config.box, size=n)
    shift = rng.uniform(-config.shift, config.shift, size=(n, 2))
    rotation = rng.uniform(-config.rotation, config.rotation, size=n)
    stroke = rng.uniform(*config.stroke, size=n)
    blur = rng.uniform(*config.blur, size=n)
    images = np.zeros((n, config.image_size, config.image_size), np.float32)
    items = range(n)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="rendering characters", unit="img", leave=False, mininterval=2.0)
    for i in items:
        images[i] = render_glyph(
            faces[face_idx[i]],
            chars[i // per_char],
            box=box[i],
            shift=(shift[i, 0], shift[i, 1]),
            rotation=rotation[i],
            stroke=stroke[i],
            blur=blur[i],
            config=config,
        )
    out_labels = np.repeat(np.asarray(labels, np.int32), per_char)
    return images, out_labels, face_idx.astype(np.int32)
