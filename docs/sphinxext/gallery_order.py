"""Order of the gallery: the guided tour first, then everything else by name."""

from sphinx_gallery.sorting import _SortKey

FIRST = [
    "plot_quickstart.py",
    "plot_cls_mean_max.py",
    "plot_layers.py",
    "plot_whitening_stsb.py",
]


class GalleryOrder(_SortKey):
    """Sort key: the files in ``FIRST`` in that order, then the rest by name."""

    def __call__(self, filename):
        name = str(filename)
        if name in FIRST:
            return (0, FIRST.index(name), name)
        return (1, 0, name)
