"""Items a client names by id instead of sending them: the data behind the cache patterns' `{"data": "0003"}`.

    store = ItemStore()                       # ITEMS: "0000" ... "0007", JPEG photos that ship with the package
    data = store.read("0003")                 # the file's bytes; NotFound (404) for an id that names no item
    class Body(BaseModel): data: ItemId = DEFAULT_ITEM

As in the book's prediction_cache and data_cache patterns, the request carries an item id and the service loads
the item itself: so a cache keyed by the id can skip loading, decoding and (for predictions) the model. Each item
is one of the shipped sample digits (`mlpatterns/data/digits/`, item "0003" is a 3) enlarged to a 512x512 JPEG, so
that loading and decoding it costs what a photo does, not what a 32x32 PNG does. `python -m mlpatterns.items`
writes them again from the digits.
"""

import io
from pathlib import Path
from typing import Annotated

from PIL import Image
from pydantic import Field

from mlpatterns.errors import NotFound
from mlpatterns.images import SAMPLE_DIGITS

ITEMS = Path(__file__).parent / "data" / "items"
ITEM_IDS = tuple(f"{digit:04d}" for digit in range(8))
DEFAULT_ITEM = ITEM_IDS[0]
ITEM_SIDE = 512

ItemId = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}$",
        description=f"The id of an item the service holds: {ITEM_IDS[0]} to {ITEM_IDS[-1]} (four digits).",
        examples=[DEFAULT_ITEM],
    ),
]


class ItemStore:
    """Item files `<id>.jpg` in one directory. Ids are checked before any path is built from them."""

    def __init__(self, directory: Path = ITEMS):
        self.directory = Path(directory)

    def ids(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.jpg"))

    def read(self, item_id: str) -> bytes:
        if not (len(item_id) == 4 and item_id.isascii() and item_id.isdigit()):
            raise NotFound(f"no item {item_id[:20]!r}: item ids are four digits")
        try:
            return (self.directory / f"{item_id}.jpg").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no item {item_id!r}; the items are {', '.join(self.ids())}") from None


def item_photo(digit_png: Path) -> bytes:
    """A shipped 32x32 digit enlarged to an ITEM_SIDE square JPEG (bicubic: smooth, as a photo of it would be)."""
    image = Image.open(digit_png).convert("RGB").resize((ITEM_SIDE, ITEM_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_items(directory: Path = ITEMS) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for item_id in ITEM_IDS:
        path = directory / f"{item_id}.jpg"
        path.write_bytes(item_photo(SAMPLE_DIGITS / f"{int(item_id)}.png"))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m mlpatterns.items: (re)write the shipped items from the shipped digits
    paths = write_items()
    print(f"wrote {len(paths)} items to {ITEMS}: {', '.join(path.name for path in paths)}")
