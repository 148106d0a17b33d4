"""Astrophysics vocabulary for the extractive summarizer: terms, synonyms and acronyms.

The paper's 77 curated classes (schemas.vocabulary.CURATED_CLASSES, reused, not copied) are the
backbone: each is a term whose name is the class, matched by its own words (singular or plural,
hyphen or space) plus the synonyms below. Other object terms and the science-use-case terms are
short canonical names with the phrasings abstracts use for them. Names obey the summary rules:
classes not instances, no acronyms, no telescope. Patterns are case-insensitive regexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from schemas.vocabulary import CURATED_CLASSES

G = r"galax(?:y|ies)"  # galaxy or galaxies

# Extra phrasings for the curated classes (the class name itself is always matched).
CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "star forming galaxies": (rf"star[- ]forming {G}", rf"{G} forming stars", r"emission[- ]line galax(?:y|ies)"),
    "lyman alpha": (r"lyman[- ]?(?:alpha|α)(?: emitters?| emission| blobs?)?", r"ly(?:α|a|alpha)(?: emitters?)?"),
    "dust": (r"dusty", r"dust[- ]obscured", r"dust lanes?"),
    "crowded stellar field": (r"crowded (?:stellar )?(?:fields?|regions?)", r"dense stellar fields?"),
    "core-collapse supernova": (r"type (?:II|IIP|IIn|IIb|Ib|Ic|Ib/c) supernova(?:e|s)?", r"stripped[- ]envelope supernova(?:e|s)?"),
    "cosmology": (r"cosmological(?: parameters| models?| constraints)?", r"expansion (?:rate|history) of the universe"),
    "gravitational lensing": (r"(?:strong|weak|gravitational(?:ly)?) lens(?:ing|ed|es)?", r"lensing", r"lensed (?:galax(?:y|ies)|sources?|quasars?)"),
    "supernovae": (r"supernova(?:e|s)?", r"type ia", r"thermonuclear (?:explosions?|supernova(?:e|s)?)"),
    "diffuse galaxies": (rf"diffuse {G}",),
    "globular clusters": (r"globular(?: star)? clusters?", r"globulars"),
    "stellar populations": (r"populations? of stars", r"resolved stars", r"individual stars", r"old stellar populations?"),
    "interstellar medium": (r"interstellar (?:gas|matter|clouds?|absorption)", r"molecular gas", r"neutral hydrogen"),
    "black holes": (r"black[- ]holes?", r"supermassive black holes?", r"intermediate[- ]mass black holes?"),
    "dark matter": (r"dark[- ]matter(?: halos?| particles?| substructure)?",),
    "galaxy clusters": (rf"clusters? of {G}", r"(?:massive|merging|rich|x-ray|lensing) clusters?", r"abell \d+",
                        r"bullet cluster", r"cluster lens(?:es|ing)?", rf"{G} clusters?"),
    "galaxy evolution": (rf"evolution of {G}", rf"{G} evolve", r"quenching"),
    "galaxy formation": (rf"formation of {G}", r"galaxy assembly", rf"{G} (?:form|assemble)"),
    "quasars": (r"quasi[- ]stellar objects?",),
    "circumstellar disks": (r"circumstellar (?:disk|disc)s?", r"debris (?:disk|disc)s?", r"accretion (?:disk|disc)s? around (?:young )?stars"),
    "exoplanets": (r"extrasolar planets?", r"(?:hot|warm|ultra-hot) (?:jupiter|neptune|saturn)s?", r"transiting planets?",
                   r"planetary (?:companions?|systems?)", r"planets? (?:around|orbiting) (?:other )?stars", r"super[- ]earths?",
                   r"exoplanet(?:ary)? atmospheres?"),
    "Kuiper Belt objects": (r"kuiper belt",),
    "solar system objects": (r"solar system", r"comets?", r"asteroids?", r"(?:planetary )?satellites of (?:jupiter|saturn)",
                             r"jupiter", r"saturn", r"uranus", r"neptune", r"mars", r"venus", r"titan", r"europa",
                             r"ganymede", r"enceladus", r"callisto", r"uranian", r"jovian", r"martian", r"giant planets?"),
    "cosmic web structure": (r"cosmic web", r"large[- ]scale structure", r"cosmic filaments?"),
    "distant galaxies": (rf"(?:distant|high[- ]redshift|faint|early|young) {G}", rf"{G} at (?:high )?redshifts?",
                         r"(?:ultra[- ])?deep fields?", r"lyman[- ]break galax(?:y|ies)", r"submillimeter galax(?:y|ies)"),
    "galaxy mergers": (r"mergers?", rf"merging (?:{G}|systems|pairs)", r"merger remnants?"),
    "galaxy interactions": (rf"interacting {G}", r"tidal (?:interactions?|tails?|features?|debris)", rf"{G} pairs?"),
    "star formation": (r"star[- ]formation", r"forming stars", r"star[- ]forming (?:complexes|activity)"),
    "stellar winds": (r"winds? (?:from|of) (?:massive |hot )?stars", r"mass[- ]loss", r"wolf[- ]rayet winds?"),
    "brown dwarfs": (r"(?:L|T|Y) dwarfs?", r"substellar (?:objects?|companions?)"),
    "white dwarfs": (r"white[- ]dwarfs?",),
    "nebulae": (r"nebula(?:e|s)?", r"h ?ii regions?", r"emission nebula(?:e|s)?", r"reflection nebula(?:e|s)?"),
    "star clusters": (r"(?:young |massive |super |stellar )(?:star )?clusters?", r"stellar clusters?", r"cluster stars"),
    "galaxy archeology": (r"galactic archa?eology", r"galaxy archa?eology", r"near[- ]field cosmology", r"fossil records?"),
    "galactic structure": (r"galactic (?:structure|bulge|disk|disc|halo|center|centre)", r"milky way(?:'s)? (?:bulge|disk|disc|halo)",
                           r"bulge(?: stars)?", r"structure of the (?:milky way|galaxy)", r"stellar halos?", r"stellar streams?"),
    "active galactic nuclei": (r"active galactic nucle(?:i|us)", r"seyferts?(?: galax(?:y|ies))?", r"blazars?",
                               r"radio galax(?:y|ies)", r"active nuclei"),
    "gamma-ray bursts": (r"gamma[- ]ray bursts?", r"afterglows?"),
    "stellar nurseries": (r"star[- ]forming regions?", r"molecular clouds?", r"stellar nurser(?:y|ies)", r"birth ?places? of stars"),
    "intergalactic medium": (r"intergalactic (?:medium|gas)", r"lyman[- ]alpha forest"),
    "dark energy": (r"accelerat(?:ing|ed) expansion", r"equation of state of dark energy"),
    "dwarf galaxies": (rf"dwarf (?:spheroidal |irregular |elliptical |satellite )?{G}", r"dwarf spheroidals?", r"ultra[- ]faint dwarfs?",
                       r"magellanic clouds?", r"(?:milky way|galactic) satellites?", r"satellite galax(?:y|ies)"),
    "barred spiral galaxies": (r"barred spirals?", rf"barred {G}", r"(?:stellar|galactic) bars?", rf"SB[a-d]? {G}"),
    "irregular galaxies": (rf"irregular {G}",),
    "starburst galaxies": (r"starbursts?", r"starbursting", r"luminous infrared galax(?:y|ies)"),
    "low surface brightness galaxies": (r"low[- ]surface[- ]brightness(?: galax(?:y|ies)| features?)?",),
    "ultra diffuse galaxies": (rf"ultra[- ]diffuse {G}",),
    "circumgalactic medium": (r"circumgalactic (?:medium|gas)", r"gaseous halos?", r"halo gas"),
    "intracluster medium": (r"intra[- ]?cluster (?:medium|gas|light)",),
    "cosmic dust": (r"interstellar dust", r"dust grains?", r"cosmic dust"),
    "interstellar chemistry": (r"astrochemistry", r"interstellar molecules", r"diffuse interstellar bands?", r"molecular (?:lines|absorption)"),
    "star formation histories": (r"star[- ]formation histor(?:y|ies)",),
    "initial mass function": (r"initial mass functions?",),
    "stellar proper motions": (r"proper[- ]motions?",),
    "binary star systems": (r"binary systems?", r"companion stars?", r"x[- ]ray binar(?:y|ies)"),
    "open clusters": (r"open (?:star )?clusters?",),
    "pre-main sequence stars": (r"pre[- ]main[- ]sequence", r"t tauri(?: stars?)?", r"young stellar objects?", r"herbig ae(?:/be)?(?: stars?)?"),
    "protostars": (r"protostars?", r"protostellar(?: objects?| cores?)?"),
    "protoplanetary disks": (r"proto[- ]?planetary (?:disk|disc)s?", r"planet[- ]forming (?:disk|disc)s?"),
    "jets and outflows": (r"jets?", r"outflows?", r"herbig[- ]haro(?: objects?)?", r"bipolar (?:flows?|lobes?)", r"galactic winds?"),
    "interstellar shocks": (r"shocks?(?: waves?| fronts?)?", r"shocked gas", r"shock breakout"),
    "planetary nebulae": (r"planetary nebula(?:e|s)?",),
    "supernova remnants": (r"supernova remnants?", r"cas(?:siopeia)? a", r"crab nebula", r"cygnus loop"),
    "red giants": (r"red[- ]giant(?:s| branch)?", r"asymptotic giant branch(?: stars)?", r"red supergiants?"),
    "Cepheid variables": (r"cepheids?(?: variables?| stars?)?",),
    "RR Lyrae variables": (r"rr ?lyrae(?: stars?| variables?)?",),
    "stellar abundances": (r"(?:stellar|chemical) abundances?", r"metallicit(?:y|ies)", r"chemical compositions?", r"metal[- ](?:rich|poor)"),
    "stellar dynamics": (r"stellar kinematics", r"velocity dispersions?", r"dynamics of (?:the )?stars"),
    "compact stellar remnants": (r"compact (?:stellar )?(?:remnants?|objects?)", r"neutron stars?", r"pulsars?", r"magnetars?"),
    "Einstein rings": (r"einstein rings?", r"(?:lensed|giant|gravitational) arcs?"),
    "trans-Neptunian objects": (r"trans[- ]neptunian(?: objects?)?", r"pluto", r"scattered disk objects?", r"centaurs"),
    "cosmic microwave background": (r"microwave background",),
    "reionization epoch": (r"re-?ionization(?: epoch| era)?", r"epoch of reionization"),
    "first stars": (r"population iii(?: stars)?", r"pop ?iii(?: stars)?"),
    "first galaxies": (r"earliest galax(?:y|ies)", r"primeval galax(?:y|ies)", r"protogalax(?:y|ies)"),
    "high-redshift quasars": (r"(?:high[- ]redshift|distant|luminous distant) (?:quasars?|qsos?)",),
    "primordial black holes": (),
    "resolved binaries": (r"visual binar(?:y|ies)", r"wide binar(?:y|ies)"),
    "binary stars": (r"eclipsing binar(?:y|ies)", r"double stars?", r"binar(?:y|ies)"),
}

# Objects outside the 77 classes, still worth naming.
EXTRA_OBJECTS: dict[str, tuple[str, ...]] = {
    "Wolf-Rayet stars": (r"wolf[- ]rayet(?: stars?)?",),
    "massive stars": (r"massive stars?", r"o (?:and|&) b stars", r"ob stars"),
    "low-mass stars": (r"low[- ]mass stars?", r"m dwarfs?", r"red dwarfs?"),
    "variable stars": (r"variable stars?",),
    "novae": (r"novae?", r"classical novae?", r"cataclysmic variables?"),
    "spiral galaxies": (r"spiral galax(?:y|ies)", r"spirals", r"disk galax(?:y|ies)"),
    "elliptical galaxies": (r"elliptical galax(?:y|ies)", r"ellipticals", r"early[- ]type galax(?:y|ies)"),
    "galaxy groups": (r"(?:compact )?groups? of galaxies", r"galaxy groups?"),
    "microlensing events": (r"microlens(?:ing|ed)?(?: events?)?",),
    "light echoes": (r"light echo(?:es)?",),
    "tidal disruption events": (r"tidal disruption(?: events?| flares?)?",),
    "kilonovae": (r"kilonova(?:e|s)?", r"neutron star mergers?"),
    "blue stragglers": (r"blue stragglers?",),
    "horizontal branch stars": (r"horizontal branch(?: stars)?",),
    "planetary aurorae": (r"aurora(?:e|s|l)?",),
    "planetary magnetospheres": (r"magnetospheres?", r"magnetospheric"),
    "planetary atmospheres": (r"planetary atmospheres?", r"atmospheric species"),
    "solar wind": (r"solar wind",),
    "absorption-line systems": (r"absorption[- ]line systems?", r"(?:quasar )?absorbers?", r"damped lyman[- ]alpha systems?"),
    "hot gas": (r"hot (?:ionized )?gas", r"coronal gas"),
    "ionized gas": (r"ionized gas", r"ionised gas", r"warm ionized medium"),
    "accretion disks": (r"accretion (?:disk|disc)s?",),
    "young stars": (r"young stars?", r"young massive stars?"),
}

SCIENCE_USE_CASES: dict[str, tuple[str, ...]] = {
    "dark matter cross section": (r"(?:self[- ]interaction )?cross[- ]sections?",),
    "mass mapping": (r"mass (?:maps?|mapping|reconstructions?|distributions?|profiles?)", r"weak lensing"),
    "testing gravity models": (r"(?:alternate|alternative|modified) (?:theories of )?gravity(?: models)?",),
    "cosmic expansion rate": (r"hubble constant", r"expansion rate", r"distance ladder"),
    "distance measurements": (r"distances?", r"distance scale"),
    "proper motion measurements": (r"proper[- ]motions?",),
    "astrometry": (r"astrometr(?:y|ic)",),
    "color-magnitude diagrams": (r"colou?r[- ]magnitude diagrams?",),
    "multiband photometry": (r"(?:panchromatic|multi[- ]?band|multi[- ]?wavelength|precise|deep) photometry",),
    "photometry": (r"photometr(?:y|ic)",),
    "ultraviolet spectroscopy": (r"(?:ultraviolet|uv|far-uv|far-ultraviolet|near-uv) spectr(?:a|um|oscopy)",),
    "spectroscopy": (r"spectr(?:a|um|oscopy|oscopic)", r"spectro-imaging"),
    "narrowband imaging": (r"narrow[- ]?band(?: imaging| images| survey)?",),
    "high-resolution imaging": (r"high[- ]resolution(?: imaging| images| observations)?", r"resolving power"),
    "deep imaging": (r"deep (?:imaging|images|observations)",),
    "time-domain monitoring": (r"monitor(?:ing)?", r"multi[- ]epoch", r"light curves?", r"time series", r"variability"),
    "age dating": (r"\bages?\b", r"age dating"),
    "star formation rates": (r"star[- ]formation rates?",),
    "star formation histories": (r"star[- ]formation histor(?:y|ies)",),
    "metallicity measurements": (r"metallicit(?:y|ies)",),
    "chemical abundances": (r"abundances?", r"chemical compositions?"),
    "redshift measurements": (r"redshifts?",),
    "stellar mass measurements": (r"stellar mass(?:es)?",),
    "dynamical masses": (r"dynamical mass(?:es)?", r"black hole mass(?:es)?"),
    "morphology": (r"morpholog(?:y|ies|ical)", r"structural parameters"),
    "progenitor identification": (r"progenitors?",),
    "testing stellar evolution": (r"stellar evolution", r"evolution of (?:massive |low[- ]mass )?stars"),
    "luminosity functions": (r"luminosity functions?",),
    "mass functions": (r"mass functions?",),
    "extinction measurements": (r"extinction", r"reddening"),
    "emission-line diagnostics": (r"emission[- ]lines?", r"line ratios?"),
    "absorption-line spectroscopy": (r"absorption[- ]lines?", r"absorption spectroscopy"),
    "atmospheric composition": (r"atmospheric (?:composition|species|chemistry)", r"transmission spectr(?:a|um|oscopy)"),
    "transit observations": (r"transits?", r"eclipses"),
    "kinematic measurements": (r"radial velocit(?:y|ies)", r"velocit(?:y|ies) fields?", r"kinematics"),
    "photometric calibration": (r"calibrat(?:e|ion|ed)",),
    "number counts": (r"number counts?", r"number densit(?:y|ies)"),
    "population synthesis": (r"population synthesis", r"stellar population models?"),
    "nucleosynthesis": (r"nucleosynthesis",),
    "imaging survey": (r"(?:imaging )?survey",),
}

# Acronyms spelled out before matching (case-sensitive; an abstract's own "long form (ACR)" wins).
ACRONYMS: dict[str, str] = {
    "AGN": "active galactic nuclei", "AGNs": "active galactic nuclei", "AGNe": "active galactic nuclei",
    "QSO": "quasar", "QSOs": "quasars", "SN": "supernova", "SNe": "supernovae", "SNR": "supernova remnant",
    "SNRs": "supernova remnants", "ISM": "interstellar medium", "IGM": "intergalactic medium",
    "CGM": "circumgalactic medium", "ICM": "intracluster medium", "IMF": "initial mass function",
    "SFR": "star formation rate", "SFRs": "star formation rates", "SFH": "star formation history",
    "SFHs": "star formation histories", "SF": "star formation", "WD": "white dwarf", "WDs": "white dwarfs",
    "BH": "black hole", "BHs": "black holes", "SMBH": "supermassive black hole", "SMBHs": "supermassive black holes",
    "IMBH": "intermediate-mass black hole", "PBH": "primordial black hole", "PBHs": "primordial black holes",
    "GRB": "gamma-ray burst", "GRBs": "gamma-ray bursts", "KBO": "Kuiper Belt object", "KBOs": "Kuiper Belt objects",
    "TNO": "trans-Neptunian object", "TNOs": "trans-Neptunian objects", "CMB": "cosmic microwave background",
    "UDG": "ultra diffuse galaxy", "UDGs": "ultra diffuse galaxies", "LSB": "low surface brightness",
    "YSO": "young stellar object", "YSOs": "young stellar objects", "PN": "planetary nebula", "PNe": "planetary nebulae",
    "LMC": "Large Magellanic Cloud", "SMC": "Small Magellanic Cloud", "MW": "Milky Way", "UFD": "ultra-faint dwarf",
    "UFDs": "ultra-faint dwarfs", "dSph": "dwarf spheroidal", "dSphs": "dwarf spheroidals",
    "CMD": "color-magnitude diagram", "CMDs": "color-magnitude diagrams", "RGB": "red giant branch",
    "AGB": "asymptotic giant branch", "HB": "horizontal branch", "LAE": "Lyman alpha emitter",
    "LAEs": "Lyman alpha emitters", "DLA": "damped Lyman alpha system", "DLAs": "damped Lyman alpha systems",
    "LBG": "Lyman break galaxy", "LBGs": "Lyman break galaxies", "ULIRG": "luminous infrared galaxy",
    "ULIRGs": "luminous infrared galaxies", "LIRG": "luminous infrared galaxy", "LIRGs": "luminous infrared galaxies",
    "TDE": "tidal disruption event", "TDEs": "tidal disruption events", "WR": "Wolf-Rayet", "PMS": "pre-main sequence",
    "EoR": "epoch of reionization", "HH": "Herbig-Haro", "CV": "cataclysmic variable", "CVs": "cataclysmic variables",
    "XRB": "X-ray binary", "XRBs": "X-ray binaries", "BCG": "brightest cluster galaxy", "BCGs": "brightest cluster galaxies",
    "SED": "spectral energy distribution", "SEDs": "spectral energy distributions", "UV": "ultraviolet", "IR": "infrared",
    "NIR": "near-infrared", "HUDF": "ultra deep field", "H0": "Hubble constant",
}

# Purpose cues: "<lead> <verb> ... <object term>" becomes the use case "<verb> <term>".
VERB_CUES: dict[str, str] = {
    "measure": r"measur(?:e|es|ed|ing)", "determine": r"determin(?:e|es|ed|ing)", "constrain": r"constrain(?:s|ed|ing)?",
    "test": r"test(?:s|ed|ing)?", "map": r"map(?:s|ped|ping)?", "identify": r"identif(?:y|ies|ied|ying)",
    "characterize": r"characteri[sz](?:e|es|ed|ing)", "study": r"stud(?:y|ies|ied|ying)|investigat(?:e|es|ed|ing)",
    "probe": r"prob(?:e|es|ed|ing)", "search for": r"search(?:es|ed|ing)? for", "detect": r"detect(?:s|ed|ing)?",
    "resolve": r"resolv(?:e|es|ed|ing)", "compare": r"compar(?:e|es|ed|ing)", "trace": r"trac(?:e|es|ed|ing)",
    "quantify": r"quantif(?:y|ies|ied|ying)", "estimate": r"estimat(?:e|es|ed|ing)", "confirm": r"confirm(?:s|ed|ing)?",
    "locate": r"locat(?:e|es|ed|ing)|pin(?:s|ning)? down", "reconstruct": r"reconstruct(?:s|ed|ing)?",
    "understand": r"understand(?:s|ing)?", "explore": r"explor(?:e|es|ed|ing)", "discover": r"discover(?:s|ed|ing)?",
    "find": r"find(?:s|ing)?", "monitor": r"monitor(?:s|ed|ing)?", "calibrate": r"calibrat(?:e|es|ed|ing)",
}
_CUE_LEAD = r"(?:\bto|\bwill|\bwe|\bshall|\bcan|\bby|\bfor|\ballow(?:s|ing)? us to)\s+(?:also\s+|then\s+|directly\s+|further\s+|first\s+)?"

# Generic items the paper's rules exclude (appear neither as objects nor as use cases).
GENERIC_ITEMS = frozenset({"galaxy", "galaxies", "star", "stars", "faint object", "kinematics", "object", "objects"})


@dataclass(frozen=True)
class Term:
    name: str
    pattern: re.Pattern[str]
    curated: bool = False


def _flex(name: str) -> str:
    """A regex for a canonical name: singular or plural last word, hyphen or space between words."""
    words = name.split(" ")
    last = words[-1]
    for plural, alternation in (("ies", "(?:y|ies)"), ("ae", "(?:a|ae|as)"), ("nuclei", "(?:nuclei|nucleus)")):
        if last.lower().endswith(plural):
            words[-1] = re.escape(last[: -len(plural)]) + alternation
            break
    else:
        words[-1] = re.escape(last[:-1]) + "s?" if last.endswith("s") and not last.endswith("ss") else re.escape(last)
    body = r"[- ]".join(re.escape(w) if i < len(words) - 1 else w for i, w in enumerate(words))
    return body.replace(r"\-", "[- ]")


def _compile(alternatives: list[str]) -> re.Pattern[str]:
    # (?<![\w-]) / (?![\w-]): whole words, so 'dust' never matches inside 'industry'.
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


@lru_cache(maxsize=1)
def object_terms() -> tuple[Term, ...]:
    unknown = set(CLASS_SYNONYMS) - set(CURATED_CLASSES)
    if unknown:
        raise ValueError(f"synonyms given for names that are not curated classes: {sorted(unknown)}")
    terms = [Term(name, _compile([_flex(name), *CLASS_SYNONYMS.get(name, ())]), curated=True) for name in CURATED_CLASSES]
    terms += [Term(name, _compile([_flex(name), *alts])) for name, alts in EXTRA_OBJECTS.items()]
    return tuple(terms)


@lru_cache(maxsize=1)
def use_case_terms() -> tuple[Term, ...]:
    return tuple(Term(name, _compile([_flex(name), *alts])) for name, alts in SCIENCE_USE_CASES.items())


@lru_cache(maxsize=1)
def verb_cue_pattern() -> re.Pattern[str]:
    groups = "|".join(f"(?P<v{i}>{regex})" for i, regex in enumerate(VERB_CUES.values()))
    return re.compile(_CUE_LEAD + r"(?:" + groups + r")\b", re.IGNORECASE)


def canonical_verb(match: re.Match[str]) -> str:
    """The canonical verb of a `verb_cue_pattern` match."""
    verbs = list(VERB_CUES)
    for name, value in match.groupdict().items():
        if value is not None:
            return verbs[int(name[1:])]
    raise ValueError("not a verb cue match")


_DEFINED = re.compile(r"\(([A-Za-z][A-Za-z0-9]{1,7})\)")
_ACRONYM = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, ACRONYMS), key=len, reverse=True)) + r")(?![\w-])")


def defined_acronyms(text: str) -> dict[str, str]:
    """Acronyms an abstract defines itself, 'ultra-faint dwarf (UFD)' -> {'UFD': 'ultra-faint dwarf'}."""
    found: dict[str, str] = {}
    for match in _DEFINED.finditer(text):
        acronym = match.group(1)
        letters = [c.lower() for c in acronym if c.isalpha() and (c.isupper() or c == acronym[0])]
        words = re.findall(r"[A-Za-z][\w'-]*", text[: match.start()])[-(len(letters) + 3):]
        parts: list[tuple[int, str]] = []  # (word index, initial) for each hyphen part
        for index, word in enumerate(words):
            parts += [(index, p[0].lower()) for p in word.split("-") if p]
        for start in range(len(parts) - len(letters), -1, -1):
            if [p[1] for p in parts[start:]] == letters:
                found[acronym] = " ".join(words[parts[start][0]:])
                break
    return found


def expand_acronyms(text: str) -> str:
    """Spell out acronyms: the abstract's own definitions first, then the common ones."""
    own = defined_acronyms(text)
    if own:
        text = re.sub(r"\s*" + _DEFINED.pattern, lambda m: "" if m.group(1) in own else m.group(0), text)
        own_pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, own)) + r")(s?)(?![\w-])")
        text = own_pattern.sub(lambda m: own[m.group(1)] + m.group(2), text)
    return _ACRONYM.sub(lambda m: ACRONYMS[m.group(1)], text)
