"""The PNG figures koqa writes (histograms, loss curve): headless, written atomically."""

from __future__ import annotations

from pathlib import Path


def new_figure():
    """(figure, axes) of the size every koqa plot uses, on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def write_png(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    from koqa.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
