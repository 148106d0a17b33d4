"""Proposal titles, abstracts and people, written from varied templates.

Each abstract names its classes (the curated name, its singular, a synonym, or an acronym spelled
out on first use), wraps them in science context, goals and instrument talk, and adds distractor
sentences (logistics, acronyms such as PSF or SED, and now and then a contrast with a different
class) so that text-image association is learnable but not a keyword lookup.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tasks.archive.classes import CLASS_SPECS, ClassSpec

INSTRUMENT_NAMES: dict[str, tuple[str, str]] = {
    "ACS/WFC": ("the Advanced Camera for Surveys (ACS)", "ACS/WFC"),
    "ACS/HRC": ("the Advanced Camera for Surveys High Resolution Channel (ACS/HRC)", "ACS/HRC"),
    "ACS/SBC": ("the ACS Solar Blind Channel (SBC)", "ACS/SBC"),
    "WFC3/UVIS": ("the Wide Field Camera 3 (WFC3)", "WFC3/UVIS"),
    "WFC3/IR": ("the infrared channel of the Wide Field Camera 3 (WFC3/IR)", "WFC3/IR"),
    "WFPC2": ("the Wide Field and Planetary Camera 2 (WFPC2)", "WFPC2"),
    "STIS/CCD": ("the Space Telescope Imaging Spectrograph (STIS)", "STIS"),
}

FIRST_NAMES = ("Maria", "John", "Wei", "Priya", "Daniel", "Sarah", "Kenji", "Elena", "Michael", "Aisha",
               "Thomas", "Laura", "David", "Chen", "Anna", "Robert", "Fatima", "James", "Olga", "Luis",
               "Hannah", "Ravi", "Sophie", "Peter", "Grace", "Mateo", "Ingrid", "Samuel", "Yuki", "Clara")
LAST_NAMES = ("Smith", "Garcia", "Chen", "Patel", "Johnson", "Kowalski", "Tanaka", "Rossi", "Brown", "Okafor",
              "Miller", "Schmidt", "Nguyen", "Anderson", "Ivanova", "Lopez", "Wilson", "Dubois", "Kim", "Murphy",
              "Larsen", "Fischer", "Moreau", "Silva", "Cohen", "Reyes", "Walker", "Novak", "Bauer", "Hughes")
INSTITUTIONS = ("Space Telescope Science Institute", "University of Arizona", "California Institute of Technology",
                "Johns Hopkins University", "University of California - Berkeley", "Max-Planck-Institut fur Astronomie",
                "University of Cambridge", "Leiden University", "NASA Goddard Space Flight Center",
                "Harvard-Smithsonian Center for Astrophysics", "University of Tokyo", "Universidad de Chile",
                "University of Toronto", "European Southern Observatory - Germany", "University of Michigan")
HONORIFICS = ("Dr.", "Dr.", "Dr.", "Prof.")

# Non-ASCII test material: accents (Latin-1 safe) and typographic quotes/dashes (not Latin-1).
NON_ASCII_PI = ("José", "Ramírez-Núñez", "Universidad de Córdoba")

_OPENINGS = (
    "{Plural} are key laboratories for the study of {context}.",
    "{Plural} remain among the outstanding puzzles in the study of {context}.",
    "Understanding {context} requires detailed observations of {plural}.",
    "Over the past decade, high-resolution imaging has transformed our view of {plural}.",
    "A complete picture of {context} is impossible without a census of {plural}.",
    "The physics of {plural} is tightly linked to {context}, yet it remains poorly constrained.",
)
_REQUESTS = (
    "We propose to use {inst_long} to image {n} {plural} in {filters} in order to {goal}.",
    "We request {orbits} orbits with {inst_long} to image {target}, a nearby {singular}, in order to {goal}.",
    "Our program will obtain deep {filters} images of the {singular} {target}, which shows {feature}.",
    "We will use {inst_long} to {goal} in a sample of {n} {plural}.",
    "Here we propose to observe {target} with {inst_long}; this {singular} is an ideal target to {goal}.",
)
_DETAILS = (
    "The images will reveal {feature} and {feature2}.",
    "Previous ground-based data hinted at {feature}; only the resolution of HST can confirm it.",
    "These data will allow us to {goal2}.",
    "Combined with archival {inst_short} data, the new images will let us {goal2}.",
    "In every {singular} of the sample we expect to see {feature}.",
)
_CLOSINGS = (
    "The results will provide new constraints on {context} and {context2}.",
    "This program will deliver a legacy data set for the study of {plural} and {context}.",
    "Our measurements will directly test current models of {context}.",
)
_SECOND_CLASS = (
    "In parallel, we will image {plural} in the same fields to {goal}.",
    "The same data also cover several {plural}, which we will use to {goal}.",
    "A second part of the program targets {plural}, where we aim to {goal}.",
)
_DISTRACTORS = (
    "All data will be processed with the standard calibration pipeline and made public immediately.",
    "The observations are coordinated with Chandra and ALMA programs that cover the same fields.",
    "We will fit spectral energy distributions (SEDs) to the resulting photometry.",
    "The point-spread function (PSF) will be modelled with TinyTim and empirical stars in the field.",
    "Our team has developed the reduction tools needed to analyse these data within a year.",
    "This program also serves as a pathfinder for JWST and the Nancy Grace Roman Space Telescope.",
    "The requested {orbits} orbits are the minimum needed to reach a signal-to-noise ratio (S/N) of 10.",
    "Dithering will remove detector artifacts and improve the sampling of the point-spread function.",
    "The targets are visible in the continuous viewing zone (CVZ), which makes scheduling efficient.",
)
_CONTRAST = (
    "Unlike earlier work on {other}, our targets have never been observed at this resolution.",
    "Models developed for {other} do not apply here, which motivates a dedicated study.",
)
_TITLES = (
    "{Inst} Imaging of {Plural}",
    "{Plural} as Probes of {Context}",
    "Resolving {Feature} in {Target}",
    "A Snapshot Survey of {Plural}",
    "{Target}: a Test Case for {Context}",
    "Deep Imaging of the {Singular} {Target}",
    "The Nature of {Plural} in the Local Universe",
    "Mapping {Context} with {Plural}",
)


@dataclass(frozen=True)
class Person:
    honorific: str
    first: str
    last: str
    institution: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class ProposalText:
    title: str
    abstract: str
    pi: Person
    cois: tuple[Person, ...]


def _title_case(text: str) -> str:
    small = {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "the", "to", "with"}
    words = text.split()
    out = []
    for i, word in enumerate(words):
        if word.isupper() or any(ch.isdigit() for ch in word) or "/" in word:
            out.append(word)
        elif i > 0 and word.lower() in small:
            out.append(word.lower())
        else:
            out.append(word[:1].upper() + word[1:])
    return " ".join(out)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Namer:
    """How one abstract names one class: a primary form, then variations."""

    def __init__(self, spec: ClassSpec, rng: random.Random):
        self.spec, self.rng = spec, rng
        roll = rng.random()
        if roll < 0.5:
            self.primary = spec.name
        elif roll < 0.84 or not (spec.synonyms or spec.acronym):
            self.primary = spec.singular if spec.singular != spec.name else spec.name
        elif roll < 0.93 and spec.synonyms:
            self.primary = rng.choice(spec.synonyms)
        elif spec.acronym:
            self.primary = f"{spec.acronym[1]} ({spec.acronym[0]})"
        else:
            self.primary = spec.name
        self.used = 0

    def plural(self) -> str:
        self.used += 1
        name = self.spec.name + "s" if self.spec.name == self.spec.singular else self.spec.name
        if self.used == 1:
            return name if self.primary in (self.spec.singular, self.spec.name) else self.primary
        return self.rng.choice([name, *self.spec.synonyms])

    def singular(self) -> str:
        self.used += 1
        if self.spec.acronym and "(" in self.primary and self.used > 1 and self.rng.random() < 0.5:
            return self.spec.acronym[0]
        return self.spec.singular


def make_person(rng: random.Random) -> Person:
    return Person(rng.choice(HONORIFICS), rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(INSTITUTIONS))


def make_target_name(spec: ClassSpec, rng: random.Random) -> str:
    pattern = rng.choice(spec.targets)
    return "".join(str(rng.randint(0, 9)) if ch == "#" else ch for ch in pattern)


def write_proposal_text(rng: random.Random, specs: list[ClassSpec], *, instrument: str, filters: list[str],
                        target: str, orbits: int, n_targets: int, non_ascii: bool = False,
                        empty_abstract: bool = False) -> ProposalText:
    """Title, abstract and investigators of one proposal about `specs` (one or two classes)."""
    main = specs[0]
    namer = _Namer(main, rng)
    inst_long, inst_short = INSTRUMENT_NAMES[instrument]
    others = [s for s in CLASS_SPECS if s not in specs]

    pools: dict[tuple[str, str], list[str]] = {}

    def draw(spec: ClassSpec, kind: str) -> str:
        """Cycle through a shuffled pool, so one abstract rarely repeats a phrase."""
        pool = pools.get((spec.name, kind))
        if not pool:
            pool = pools[(spec.name, kind)] = rng.sample(getattr(spec, kind), len(getattr(spec, kind)))
        return pool.pop()

    def fill(template: str, spec: ClassSpec, who: _Namer) -> str:
        values = {
            "context": draw(spec, "context"), "context2": draw(spec, "context"),
            "feature": draw(spec, "features"), "feature2": draw(spec, "features"),
            "goal": draw(spec, "goals"), "goal2": draw(spec, "goals"),
            "inst_long": inst_long, "inst_short": inst_short,
            "filters": " and ".join(filters), "orbits": orbits, "n": n_targets, "target": target,
            "other": rng.choice(others).name if others else "other objects",
        }
        if "{Plural}" in template:
            values["Plural"] = _cap(who.plural())
        if "{plural}" in template:
            values["plural"] = who.plural()
        if "{singular}" in template:
            values["singular"] = who.singular()
        return template.format(**values)

    sentences = [fill(rng.choice(_OPENINGS), main, namer), fill(rng.choice(_REQUESTS), main, namer)]
    sentences += [fill(t, main, namer) for t in rng.sample(_DETAILS, rng.randint(1, 2))]
    for extra in specs[1:]:
        sentences.append(fill(rng.choice(_SECOND_CLASS), extra, _Namer(extra, rng)))
    distractors = [fill(t, main, namer) for t in rng.sample(_DISTRACTORS, rng.randint(1, 3))]
    if rng.random() < 0.15:
        distractors.append(fill(rng.choice(_CONTRAST), main, namer))
    for sentence in distractors:
        sentences.insert(rng.randint(2, len(sentences)), sentence)
    sentences.append(fill(rng.choice(_CLOSINGS), main, namer))
    abstract = " ".join(sentences)

    title_namer = _Namer(main, rng)
    title = _title_case(rng.choice(_TITLES).format(
        Inst=inst_short, Plural=title_namer.plural(), Singular=main.singular, Target=target,
        Context=rng.choice(main.context), Feature=rng.choice(main.features)))

    pi = make_person(rng)
    cois = tuple(make_person(rng) for _ in range(rng.randint(1, 5)))
    if non_ascii:
        first, last, institution = NON_ASCII_PI
        pi = Person("Dr.", first, last, institution)
        title = f"\u201cPilot\u201d {title} \u2014 a Feasibility Study"
        abstract += (f" This \u201cpilot\u201d study \u2014 led by the N\u00fa\u00f1ez group at C\u00f3rdoba \u2014 "
                     f"builds on the team\u2019s earlier r\u00e9sum\u00e9 of {main.name}.")
    if empty_abstract:
        abstract = ""
    return ProposalText(title=title, abstract=abstract, pi=pi, cois=cois)
