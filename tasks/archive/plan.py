"""Plan a synthetic sky: proposals, observations, products and deliberate defects, with no pixels.

Pure and deterministic: the same arguments give the same plan. Rendering (render.py) and writing
(sky.py) follow the plan. Identifiers and times look like MAST's: proposal ids rise with cycle,
obsid is a bigint-like number, obs_id an ipppssoot name, times are MJD, and each observation is
released 365 days after it was taken, so releases rise with cycle and a refresh by
`t_obs_release` window picks up exactly the newer cycles.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from tasks.archive.classes import CLASS_SPECS, ClassSpec
from tasks.archive.documents import ProposalDoc, VisitDoc
from tasks.archive.text import make_target_name, write_proposal_text

CYCLE20_START_MJD = 56201.0  # 2012-10-01, the start of HST Cycle 20
PROPRIETARY_DAYS = 365.0

FILTERS: dict[str, tuple[str, ...]] = {
    "ACS/WFC": ("F435W", "F475W", "F555W", "F606W", "F625W", "F658N", "F775W", "F814W", "F850LP"),
    "ACS/HRC": ("F220W", "F330W", "F435W", "F606W", "F814W"),
    "ACS/SBC": ("F115LP", "F122M", "F140LP"),
    "WFC3/UVIS": ("F225W", "F275W", "F336W", "F438W", "F502N", "F555W", "F606W", "F656N", "F814W"),
    "WFC3/IR": ("F105W", "F110W", "F125W", "F140W", "F160W"),
    "WFPC2": ("F300W", "F439W", "F555W", "F606W", "F656N", "F675W", "F814W"),
    "STIS/CCD": ("50CCD", "F28X50LP"),
}
# cycles in which each instrument took data (simplified from HST's history)
INSTRUMENT_CYCLES: dict[str, tuple[int, int]] = {
    "WFPC2": (1, 16), "ACS/WFC": (11, 99), "ACS/HRC": (11, 14), "ACS/SBC": (11, 99),
    "WFC3/UVIS": (17, 99), "WFC3/IR": (17, 99), "STIS/CCD": (7, 99),
}
_INSTRUMENT_CODE = {"ACS": ("j", "acs"), "WFC3": ("i", "wfc3"), "WFPC2": ("u", "wfpc2"), "STIS": ("o", "stis")}
_PROP_TYPES = (("GO", 0.72), ("SNAP", 0.14), ("GTO", 0.08), ("DD", 0.06))
_TARGET_CLASSIFICATION = {
    "GALAXIES": "GALAXY", "STELLAR POPULATIONS": "STAR CLUSTER;STELLAR FIELD", "COSMOLOGY": "CLUSTER OF GALAXIES;LENS",
    "STELLAR PHYSICS": "NEBULA;PLANETARY NEBULA", "ISM AND CIRCUMSTELLAR MATTER": "NEBULA;SUPERNOVA REMNANT",
    "STAR FORMATION": "STAR;PRE-MAIN SEQUENCE", "SOLAR SYSTEM": "PLANET;COMET", "AGN/QUASARS": "GALAXY;QSO",
}
PROPOSAL_DEFECTS = ("empty_abstract", "no_observations", "non_ascii", "apt_only", "pro_only")
OBSERVATION_DEFECTS = ("corrupt_jpeg", "zero_byte_jpeg", "no_preview", "preview_404")


def cycle_start_mjd(cycle: int) -> float:
    return CYCLE20_START_MJD + (cycle - 20) * 365.25


def image_seed(stream: str, seed: int, obsid: int) -> int:
    digest = hashlib.sha256(f"hubbleclip-sky:{stream}:{seed}:{obsid}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class ObservationPlan:
    obsid: int
    obs_id: str
    proposal_id: str
    kind: str  # science | spectrum | calibration | exclusive | raw
    instrument: str
    filters: tuple[str, ...]
    target: str
    ra: float
    dec: float
    moving: bool
    t_min: float
    exptime: float
    calib_level: int
    visit: str
    style: str | None = None  # renderer, for science images
    class_name: str | None = None
    preview: str | None = None  # total preview filename
    color: str | None = None  # colour composite preview filename
    single: str | None = None  # one-filter preview filename
    defect: str | None = None  # one of OBSERVATION_DEFECTS
    image_seed: int = 0

    @property
    def obs_lower(self) -> str:
        return self.obs_id.lower()

    @property
    def t_max(self) -> float:
        return self.t_min + self.exptime / 86400.0

    @property
    def t_release(self) -> float:
        return self.t_min + PROPRIETARY_DAYS + (self.obsid % 1000) / 1000.0

    @property
    def fits_names(self) -> tuple[str, str]:
        suffix = "drc" if self.instrument in ("ACS/WFC", "WFC3/UVIS") else "drz"
        return f"{self.obs_lower}_{suffix}.fits", f"{self.obs_lower}_flt.fits"


@dataclass
class ProposalPlan:
    proposal_id: str
    cycle: int
    classes: list[ClassSpec]
    doc: ProposalDoc
    has_apt: bool = True
    has_pro: bool = True
    defects: list[str] = field(default_factory=list)
    observations: list[ObservationPlan] = field(default_factory=list)


@dataclass
class SkyPlan:
    proposals: list[ProposalPlan]
    next_proposal_id: int
    next_obsid: int

    @property
    def observations(self) -> list[ObservationPlan]:
        return [obs for p in self.proposals for obs in p.observations]


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _base36(value: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(width):
        value, rem = divmod(value, 36)
        out = digits[rem] + out
    return out


def _instruments_for(spec: ClassSpec, cycle: int) -> list[str]:
    available = [i for i, (lo, hi) in INSTRUMENT_CYCLES.items() if lo <= cycle <= hi]
    preferred = [i for i in spec.instruments if i in available]
    return preferred or [i for i in available if i in FILTERS and i != "STIS/CCD"] or ["WFPC2"]


def _inst_token(instrument: str) -> str:
    family, _, detector = instrument.partition("/")
    return f"{_INSTRUMENT_CODE[family][1]}_{(detector or family).lower()}"


def _pick_prop_type(rng: random.Random) -> str:
    roll, acc = rng.random(), 0.0
    for name, weight in _PROP_TYPES:
        acc += weight
        if roll < acc:
            return name
    return "GO"


def plan_sky(*, proposals: int, seed: int, cycles: list[int], first_proposal_id: int, first_obsid: int,
             bad_records: bool, mean_observations: float, max_observations: int, two_class_fraction: float,
             stream: str = "base") -> SkyPlan:
    """Plan `proposals` proposals spread evenly over `cycles` (sorted), ids starting at the given ones."""
    rng = random.Random(f"hubbleclip-sky:{stream}:{seed}")
    proposal_defects: dict[int, str] = {}
    if bad_records:
        proposal_defects = dict(zip(rng.sample(range(proposals), len(PROPOSAL_DEFECTS)), PROPOSAL_DEFECTS, strict=True))

    plans: list[ProposalPlan] = []
    pid = first_proposal_id
    obsid = first_obsid
    for index in range(proposals):
        cycle = cycles[index * len(cycles) // proposals]
        pid = max(pid + 1 + (rng.random() < 0.3) * rng.randint(1, 4), 12823 + (cycle - 20) * 430)
        defect = proposal_defects.get(index)
        n_classes = 2 if rng.random() < two_class_fraction else 1
        specs = rng.sample(CLASS_SPECS, n_classes)
        main = specs[0]
        instruments = _instruments_for(main, cycle)
        main_instrument = instruments[0] if rng.random() < 0.6 else rng.choice(instruments)
        n_targets = 1 if rng.random() < 0.6 else rng.randint(2, 6)
        targets = []
        for t in range(n_targets):
            spec = specs[t % len(specs)]
            ra, dec = rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-1, 1)))
            targets.append((make_target_name(spec, rng), round(ra, 6), round(dec, 6), spec))
        n_obs = 0 if defect == "no_observations" else min(max_observations, 1 + _poisson(rng, mean_observations - 1))
        orbits = max(1, n_obs + rng.randint(0, 6))
        filters = rng.sample(FILTERS[main_instrument], min(2, len(FILTERS[main_instrument])))
        text = write_proposal_text(rng, specs, instrument=main_instrument, filters=filters, target=targets[0][0],
                                   orbits=orbits, n_targets=n_targets, non_ascii=defect == "non_ascii",
                                   empty_abstract=defect == "empty_abstract")
        prop_type = "AR" if defect == "no_observations" else _pick_prop_type(rng)
        window_start = cycle_start_mjd(cycle) + rng.uniform(0, 300)
        plan_obs: list[ObservationPlan] = []
        code = _base36(pid, 3)
        for k in range(n_obs):
            target_name, ra, dec, spec = targets[k % n_targets] if rng.random() < 0.8 else rng.choice(targets)
            instrument = main_instrument if rng.random() < 0.8 else rng.choice(instruments)
            letter = _INSTRUMENT_CODE[instrument.split("/")[0]][0]
            obsid += rng.randint(1, 40)
            visit = f"{k + 1:02d}"
            obs_filters = tuple(sorted(rng.sample(FILTERS[instrument], 1 if rng.random() < 0.6 else 2)))
            moving = spec.style == "solar_system"
            obs = ObservationPlan(
                obsid=obsid, obs_id=f"{letter}{code}{visit}{_base36(k * 7 + 10, 2)}{'m' if letter == 'u' else 'q'}".upper(),
                proposal_id=str(pid), kind="science", instrument=instrument, filters=obs_filters, target=target_name,
                ra=round((ra + (rng.uniform(-0.5, 0.5) if moving else rng.uniform(-0.002, 0.002))) % 360, 7),
                dec=round(max(-90.0, min(90.0, dec + rng.uniform(-0.002, 0.002))), 7), moving=moving,
                t_min=round(window_start + rng.uniform(0, 60), 6), exptime=round(rng.uniform(300, 2800), 1),
                calib_level=3 if rng.random() < 0.85 else 2, visit=visit, style=spec.style, class_name=spec.name)
            stem = f"hst_{int(pid):05d}_{visit}_{_inst_token(instrument)}"
            suffix = "drc" if instrument in ("ACS/WFC", "WFC3/UVIS") else "drz"
            obs.preview = f"{stem}_total_{obs.obs_lower[:6]}_{suffix}.jpg"
            if rng.random() < 0.5:
                obs.color = f"{stem}_total_{obs.obs_lower[:6]}_color_{suffix}.jpg"
            if rng.random() < 0.5:
                obs.single = f"{stem}_{obs_filters[0].lower()}_{obs.obs_lower[:6]}_{suffix}.jpg"
            obs.image_seed = image_seed(stream, seed, obsid)
            plan_obs.append(obs)
        if plan_obs and rng.random() < 0.2:  # a row the pipeline's query must filter out
            kind = rng.choice(("spectrum", "calibration", "exclusive", "raw"))
            obsid += rng.randint(1, 40)
            base = plan_obs[0]
            letter = "o" if kind == "spectrum" else base.obs_id[0].lower()
            plan_obs.append(ObservationPlan(
                obsid=obsid, obs_id=f"{letter}{code}z{len(plan_obs):01d}{_base36(obsid % 1296, 2)}q".upper(),
                proposal_id=str(pid), kind=kind, instrument="STIS/CCD" if kind == "spectrum" else base.instrument,
                filters=("G430L",) if kind == "spectrum" else base.filters, target=base.target, ra=base.ra,
                dec=base.dec, moving=base.moving, t_min=round(base.t_min + 0.1, 6), exptime=base.exptime,
                calib_level=1 if kind == "raw" else 2, visit="z1"))
        doc = ProposalDoc(
            proposal_id=str(pid), cycle=cycle,
            submission_cycle=cycle - 1 if rng.random() < 0.1 else cycle,  # carried-over programs
            prop_type=prop_type, category=main.category, title=text.title, abstract=text.abstract, pi=text.pi,
            cois=text.cois, targets=tuple((name, ra, dec) for name, ra, dec, _ in targets),
            solar_system=main.style == "solar_system",
            visits=tuple(VisitDoc(o.visit, o.target, o.instrument, o.filters, o.exptime) for o in plan_obs if o.kind == "science"),
            version=rng.randint(1, 15), phase1_id=rng.randint(100, 999))
        plan = ProposalPlan(proposal_id=str(pid), cycle=cycle, classes=specs, doc=doc, observations=plan_obs,
                            has_apt=defect != "pro_only", has_pro=defect != "apt_only")
        if defect:
            plan.defects.append(defect)
        plans.append(plan)

    if bad_records:
        science = [o for p in plans for o in p.observations if o.kind == "science"]
        for obs, defect in zip(rng.sample(science, len(OBSERVATION_DEFECTS)), OBSERVATION_DEFECTS, strict=True):
            obs.defect = defect
            if defect == "no_preview":
                obs.preview = obs.color = obs.single = None
    return SkyPlan(plans, next_proposal_id=pid + 1, next_obsid=obsid + 1)


def target_classification(spec_category: str) -> str:
    return _TARGET_CLASSIFICATION.get(spec_category, "")
