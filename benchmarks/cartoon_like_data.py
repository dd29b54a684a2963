"""Writes a Cartoon-Set-like archive of 500x500 RGBA PNG faces, for the input benchmarks.

No data set can be downloaded here, so the input rates are measured on generated images in the
real layout (cartoonset10k.tgz of csNNNN.png + csNNNN.csv, as tests/datagen.py writes it) whose
PNGs cost what the real ones cost to decode: 500x500 RGBA, transparent around a face of flat
colours with anti-aliased edges (drawn at 2x and downsampled), a few tens of KB each.

  python benchmarks/cartoon_like_data.py --out=/tmp/cartoon_manual --n=2000
"""
import argparse
import io
import os
import sys
import tarfile

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import datagen  # noqa: E402  # pylint: disable=wrong-import-position

SIZE = 500


def face_png(index: int) -> bytes:
  """One cartoon-like face: skin ellipse, hair, eyes, brows, mouth, maybe glasses."""
  rng = np.random.default_rng(index)
  big = SIZE * 2
  image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
  draw = ImageDraw.Draw(image)

  def colour():
    return tuple(int(v) for v in rng.integers(20, 240, 3)) + (255,)

  skin, hair, eyes = colour(), colour(), colour()
  cx, cy = big // 2, big // 2 + int(rng.integers(-40, 40))
  w, h = int(rng.integers(300, 380)), int(rng.integers(380, 460))
  draw.ellipse([cx - w, cy - h - 120, cx + w, cy + 100], fill=hair)  # Hair behind the face.
  draw.ellipse([cx - w + 40, cy - h + 60, cx + w - 40, cy + h - 40], fill=skin)
  for side in (-1, 1):
    ex = cx + side * int(rng.integers(110, 160))
    ey = cy - int(rng.integers(20, 80))
    draw.ellipse([ex - 50, ey - 35, ex + 50, ey + 35], fill=(255, 255, 255, 255))
    draw.ellipse([ex - 22, ey - 22, ex + 22, ey + 22], fill=eyes)
    draw.line([ex - 60, ey - 70, ex + 60, ey - 80 + side * 10], fill=hair, width=18)
    if index % 3 == 0:
      draw.ellipse([ex - 75, ey - 60, ex + 75, ey + 60], outline=(30, 30, 30, 255), width=10)
  draw.arc([cx - 110, cy + 80, cx + 110, cy + 220], 10, 170, fill=(120, 30, 30, 255), width=14)
  draw.polygon([(cx - w, cy - h), (cx + w, cy - h), (cx + int(rng.integers(0, w)), cy - h // 3),
                (cx - w // 2, cy - h // 2)], fill=hair)
  image = image.resize((SIZE, SIZE), Image.LANCZOS)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def write_archive(directory: str, n: int, start_id: int = 1000) -> str:
  """cartoonset10k.tgz with n faces; returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "cartoonset10k.tgz")
  with tarfile.open(path, "w:gz") as tar:
    for i in range(n):
      key = f"cs{start_id + i}"
      for name, data in ((f"cartoonset10k/{key}.png", face_png(i)),
                         (f"cartoonset10k/{key}.csv",
                          datagen.cartoon_csv(datagen.cartoon_attributes(i)).encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="Manual dir to write cartoonset10k.tgz into.")
  parser.add_argument("--n", type=int, default=2000, help="Number of faces.")
  args = parser.parse_args()
  print(write_archive(args.out, args.n))


if __name__ == "__main__":
  main()
