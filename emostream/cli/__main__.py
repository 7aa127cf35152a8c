"""``python -m emostream.cli``: the same as the ``emostream`` console script."""

from emostream.cli import main

main()
