"""Site registry of the six-site prostate T2 MRI collection (DESIGN §4).

Sites are ordered S1…S6 = RUNMC, BMC, I2CVB, UCL, BIDMC, HK. Every site can be named by its
canonical folder name, its ordinal key (``S1``…``S6``), its letter (``A``…``F``) or a known alias
(``HCRUDB`` = I2CVB); matching ignores case, spaces, ``-`` and ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SITES", "Site", "resolve_site", "site_names", "try_resolve_site"]


@dataclass(frozen=True)
class Site:
    """Metadata of one acquisition site.

    Attributes:
        key: ordinal key, ``"S1"`` … ``"S6"``.
        name: canonical folder name on disk (e.g. ``"BMC"``).
        letter: letter used in the literature (``"A"`` … ``"F"``).
        n_cases: number of cases in the public collection.
        field_strength: magnetic field in tesla, e.g. ``"3T"`` or ``"1.5/3T"``.
        coil: ``"surface"`` or ``"endorectal"``.
        vendor: scanner vendor.
        inplane_mm: typical in-plane resolution (min, max) in mm.
        thickness_mm: typical slice thickness (min, max) in mm.
        aliases: further accepted names.
    """

    key: str
    name: str
    letter: str
    n_cases: int
    field_strength: str
    coil: str
    vendor: str
    inplane_mm: tuple[float, float]
    thickness_mm: tuple[float, float]
    aliases: tuple[str, ...] = ()

    @property
    def index(self) -> int:
        """Zero-based position in :data:`SITES`."""
        return int(self.key[1:]) - 1

    @property
    def endorectal(self) -> bool:
        """Whether the site used an endorectal coil (strong bias field near the rectum)."""
        return self.coil == "endorectal"


SITES: tuple[Site, ...] = (
    Site("S1", "RUNMC", "A", 30, "3T", "surface", "Siemens", (0.6, 0.625), (3.6, 4.0)),
    Site("S2", "BMC", "B", 30, "1.5T", "endorectal", "Philips", (0.4, 0.4), (3.0, 3.0)),
    Site("S3", "I2CVB", "C", 19, "3T", "surface", "Siemens", (0.67, 0.79), (1.25, 1.25), ("HCRUDB",)),
    Site("S4", "UCL", "D", 13, "1.5/3T", "surface", "Siemens", (0.325, 0.625), (3.0, 3.6)),
    Site("S5", "BIDMC", "E", 12, "3T", "endorectal", "GE", (0.25, 0.25), (2.2, 3.0)),
    Site("S6", "HK", "F", 12, "1.5T", "endorectal", "Siemens", (0.625, 0.625), (3.6, 3.6)),
)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch not in " -_")


_LOOKUP: dict[str, Site] = {}
for _site in SITES:
    for _alias in (_site.key, _site.name, _site.letter, f"SITE{_site.letter}", *_site.aliases):
        _LOOKUP[_norm(_alias)] = _site


def try_resolve_site(name: str) -> Site | None:
    """Return the :class:`Site` named ``name`` (any alias), or ``None`` if it is not a known site."""
    return _LOOKUP.get(_norm(str(name)))


def resolve_site(name: str) -> Site:
    """Return the :class:`Site` named ``name`` (any alias).

    Raises:
        KeyError: ``name`` is not a known site; the message lists the accepted names.
    """
    site = try_resolve_site(name)
    if site is None:
        raise KeyError(f"unknown site {name!r}; known sites: {', '.join(site_names())} "
                       "(aliases S1…S6, A…F, HCRUDB)")
    return site


def site_names() -> list[str]:
    """Canonical site names in order S1…S6."""
    return [s.name for s in SITES]
