"""The science classes of the synthetic sky: how each one looks and how proposals talk about it.

Every class name is one of the paper's curated classes (schemas.vocabulary.CURATED_CLASSES), so the
zero-shot evaluation scores against the same names the ground truth uses. `style` picks the
procedural renderer in render.py; the vocabulary feeds the abstract templates in text.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.vocabulary import CURATED_CLASSES


@dataclass(frozen=True)
class ClassSpec:
    name: str  # curated class name (plural, as in CURATED_CLASSES)
    singular: str  # the same name for one object ("a planetary nebula")
    style: str  # renderer key in render.py
    synonyms: tuple[str, ...]  # common alternative names, plural
    acronym: tuple[str, str] | None  # (short, spelled out, plural), e.g. ("PN", "planetary nebulae")
    category: str  # STScI science category of the catalog flat file
    targets: tuple[str, ...]  # target-name patterns; '#' is replaced by digits
    instruments: tuple[str, ...]  # preferred instruments, most likely first
    goals: tuple[str, ...]  # science aims, completing "in order to ..."
    context: tuple[str, ...]  # other curated names that proposals cite as science context
    features: tuple[str, ...]  # what the images show, for descriptive sentences


CLASS_SPECS: tuple[ClassSpec, ...] = (
    ClassSpec(
        "barred spiral galaxies", "barred spiral galaxy", "barred_spiral",
        ("SB galaxies", "spiral galaxies with stellar bars", "barred disk galaxies"), None,
        "GALAXIES", ("NGC-####", "NGC-###", "UGC-####", "IC-####"), ("ACS/WFC", "WFC3/UVIS", "WFPC2"),
        ("measure bar pattern speeds and the transfer of angular momentum to the dark halo",
         "trace secular evolution driven by the bar", "map star formation along the spiral arms",
         "quantify gas inflow along the bar dust lanes"),
        ("galaxy evolution", "star formation", "galactic structure", "dust"),
        ("a prominent central bar", "two grand-design spiral arms", "dust lanes along the bar"),
    ),
    ClassSpec(
        "irregular galaxies", "irregular galaxy", "irregular",
        ("Magellanic irregulars", "dwarf irregular galaxies", "clumpy irregular systems"), ("dIrr", "dwarf irregular galaxies"),
        "GALAXIES", ("NGC-####", "UGC-####", "DDO-###", "IC-####"), ("ACS/WFC", "WFC3/UVIS", "WFPC2"),
        ("measure the star formation histories of gas-rich irregulars",
         "resolve giant star-forming clumps", "test feedback models in shallow potentials"),
        ("star formation histories", "stellar populations", "interstellar medium"),
        ("bright star-forming knots", "an asymmetric clumpy disk", "no ordered spiral pattern"),
    ),
    ClassSpec(
        "globular clusters", "globular cluster", "globular",
        ("old massive star clusters", "Galactic globulars"), ("GC", "globular clusters"),
        "STELLAR POPULATIONS", ("NGC-####", "M#", "M##", "PAL-#", "TERZAN-#"), ("ACS/WFC", "WFC3/UVIS", "WFPC2"),
        ("measure absolute ages from the main-sequence turnoff", "search for multiple stellar populations",
         "measure internal proper motions in the cluster core", "study mass segregation and core collapse"),
        ("stellar populations", "stellar dynamics", "stellar proper motions", "white dwarfs"),
        ("a dense, centrally concentrated swarm of stars", "a resolved core", "thousands of resolved stars"),
    ),
    ClassSpec(
        "crowded stellar field", "crowded stellar field", "crowded",
        ("dense star fields", "crowded bulge fields", "crowded fields"), None,
        "STELLAR POPULATIONS", ("BULGE-FIELD-#", "SWEEPS-#", "BAADE-WINDOW", "LMC-FIELD-##"), ("WFC3/UVIS", "ACS/WFC", "WFC3/IR"),
        ("measure proper motions of millions of stars", "derive the initial mass function of the bulge",
         "search for transiting planets and variables in a crowded stellar field"),
        ("stellar populations", "initial mass function", "galactic structure", "stellar proper motions"),
        ("stars filling the whole field of view", "heavy crowding", "no central concentration"),
    ),
    ClassSpec(
        "dwarf galaxies", "dwarf galaxy", "dwarf",
        ("dwarf spheroidals", "ultra-faint dwarfs", "dwarf satellites"), ("dSph", "dwarf spheroidal galaxies"),
        "GALAXIES", ("LEO-#", "DRACO", "SCULPTOR", "AND-##", "KKR-##"), ("ACS/WFC", "WFC3/UVIS"),
        ("derive star formation histories from deep color-magnitude diagrams",
         "measure the dark matter content of faint satellites", "test reionization quenching of small halos"),
        ("dark matter", "star formation histories", "galaxy archeology", "reionization epoch"),
        ("a sparse, diffuse swarm of faint stars", "a low surface brightness body", "background galaxies shining through"),
    ),
    ClassSpec(
        "Einstein rings", "Einstein ring", "einstein_ring",
        ("complete lensed rings", "galaxy-scale strong lenses"), None,
        "COSMOLOGY", ("SDSSJ####+####", "SLACS-J####+####", "BELLS-J####+####"), ("WFC3/UVIS", "ACS/WFC", "WFC3/IR"),
        ("measure the total mass profiles of massive elliptical lenses",
         "constrain dark matter substructure from ring perturbations", "reconstruct the magnified source galaxies"),
        ("gravitational lensing", "dark matter", "distant galaxies"),
        ("a thin complete ring around a red elliptical", "a lensed ring with bright knots"),
    ),
    ClassSpec(
        "gravitational lensing", "gravitational lens", "lensing_arcs",
        ("strong lensing", "strong gravitational lensing", "lensed arcs"), None,
        "COSMOLOGY", ("SDSSJ####+####", "RCS2-J####-####", "SGAS-J####+####"), ("ACS/WFC", "WFC3/UVIS", "WFC3/IR"),
        ("map dark matter with multiply imaged arcs", "study magnified galaxies at cosmic noon",
         "measure time delays and the Hubble constant"),
        ("dark matter", "cosmology", "distant galaxies", "galaxy formation"),
        ("giant tangential arcs", "multiple images around a massive lens galaxy"),
    ),
    ClassSpec(
        "galaxy clusters", "galaxy cluster", "galaxy_cluster",
        ("clusters of galaxies", "massive clusters", "rich clusters"), None,
        "COSMOLOGY", ("ABELL-####", "MACS-J####-####", "RXC-J####-####", "SPT-CL-J####-####"), ("ACS/WFC", "WFC3/IR", "WFC3/UVIS"),
        ("weigh the cluster with weak and strong lensing", "study galaxy evolution in dense environments",
         "map the intracluster light"),
        ("dark matter", "intracluster medium", "galaxy evolution", "cosmology"),
        ("dozens of red elliptical member galaxies", "a giant central elliptical", "faint lensed features"),
    ),
    ClassSpec(
        "planetary nebulae", "planetary nebula", "planetary_nebula",
        ("PNe", "post-AGB nebulae"), ("PN", "planetary nebulae"),
        "STELLAR PHYSICS", ("NGC-####", "IC-####", "PN-G###.#+##.#", "HE-2-###"), ("WFC3/UVIS", "WFPC2", "ACS/WFC"),
        ("trace the mass-loss history of the central star", "measure shell expansion ages",
         "test shaping by binary central stars"),
        ("stellar winds", "white dwarfs", "binary stars", "interstellar shocks"),
        ("nested limb-brightened shells", "a hot central star", "bipolar lobes"),
    ),
    ClassSpec(
        "supernova remnants", "supernova remnant", "supernova_remnant",
        ("remnants of exploded stars", "SN remnants"), ("SNR", "supernova remnants"),
        "ISM AND CIRCUMSTELLAR MATTER", ("CASSIOPEIA-A", "N###", "CYGNUS-LOOP", "KEPLER-SNR", "E0102-72"), ("WFC3/UVIS", "ACS/WFC", "WFPC2"),
        ("measure proper motions of the shock front", "map the ejecta composition",
         "study the interaction of blast waves with the interstellar medium"),
        ("interstellar shocks", "core-collapse supernova", "supernovae", "interstellar medium"),
        ("a shell of thin tangled filaments", "a broken expanding shock front"),
    ),
    ClassSpec(
        "protoplanetary disks", "protoplanetary disk", "edge_on_disk",
        ("proplyds", "edge-on circumstellar disks", "planet-forming disks"), ("PPD", "protoplanetary disks"),
        "STAR FORMATION", ("HH-##", "IRAS-#####+####", "ORION-###-###", "TAU-DISK-#"), ("ACS/WFC", "WFC3/UVIS", "WFPC2"),
        ("measure dust settling and grain growth in the disk", "resolve the dark midplane of edge-on disks",
         "search for gaps carved by forming planets"),
        ("circumstellar disks", "pre-main sequence stars", "exoplanets", "cosmic dust"),
        ("two scattered-light nebulae separated by a dark lane", "a flared edge-on disk"),
    ),
    ClassSpec(
        "jets and outflows", "jet", "jets",
        ("Herbig-Haro outflows", "protostellar jets", "bipolar outflows"), ("HH", "Herbig-Haro outflows"),
        "STAR FORMATION", ("HH-###", "HH-##", "HH-####"), ("WFC3/UVIS", "ACS/WFC", "WFC3/IR"),
        ("measure proper motions of knots along the jet", "test models of jet launching and collimation",
         "study bow shocks where the outflow hits the cloud"),
        ("protostars", "interstellar shocks", "star formation"),
        ("a narrow knotty jet", "bow shocks at the tips of a bipolar outflow"),
    ),
    ClassSpec(
        "stellar nurseries", "stellar nursery", "nursery",
        ("star-forming regions", "HII regions", "giant molecular clouds"), None,
        "STAR FORMATION", ("NGC-####", "M16", "CARINA-##", "30-DOR", "W5"), ("WFC3/UVIS", "ACS/WFC", "WFC3/IR"),
        ("study photoevaporation of dense pillars", "measure the mass function of young clusters",
         "trace triggered star formation at ionization fronts"),
        ("star formation", "initial mass function", "interstellar medium", "protostars"),
        ("glowing ionized gas", "dark dusty pillars", "a young cluster of hot stars"),
    ),
    ClassSpec(
        "solar system objects", "solar system object", "solar_system",
        ("planets and comets", "solar system bodies", "comets", "giant planets"), None,
        "SOLAR SYSTEM", ("SATURN", "URANUS", "JUPITER", "C/20##-A#", "P/20##-K#", "NEPTUNE"), ("WFC3/UVIS", "ACS/WFC", "WFPC2"),
        ("monitor atmospheric storms and ring dynamics", "measure the activity of comets near perihelion",
         "study seasonal change on the giant planets"),
        ("Kuiper Belt objects", "trans-Neptunian objects", "exoplanets"),
        ("a ringed giant planet", "a comet with a long tail", "trailed background stars"),
    ),
    ClassSpec(
        "galaxy mergers", "galaxy merger", "merger",
        ("interacting galaxies", "merging galaxies", "colliding galaxies"), ("ULIRG", "ultraluminous infrared galaxies"),
        "GALAXIES", ("ARP-###", "NGC-####", "MRK-###", "VV-###"), ("ACS/WFC", "WFC3/UVIS", "WFPC2"),
        ("measure star cluster formation triggered by the interaction", "trace tidal tails and bridges",
         "test merger-driven fueling of nuclear activity"),
        ("galaxy interactions", "starburst galaxies", "galaxy evolution", "active galactic nuclei"),
        ("two overlapping disks", "long tidal tails", "knots of young clusters"),
    ),
    ClassSpec(
        "quasars", "quasar", "quasar",
        ("quasi-stellar objects", "luminous active nuclei"), ("QSO", "quasi-stellar objects"),
        "AGN/QUASARS", ("PG-####+###", "3C-###", "SDSS-J####+####", "QSO-B####-###"), ("WFC3/IR", "ACS/WFC", "WFC3/UVIS"),
        ("detect the host galaxies under the glare of the nucleus", "measure black hole to bulge mass ratios",
         "study quasar feedback on the host"),
        ("active galactic nuclei", "black holes", "galaxy evolution"),
        ("a dazzling point source with diffraction spikes", "a faint host galaxy around the nucleus"),
    ),
)

CLASS_BY_NAME: dict[str, ClassSpec] = {spec.name: spec for spec in CLASS_SPECS}
CLASS_NAMES: tuple[str, ...] = tuple(spec.name for spec in CLASS_SPECS)

_unknown = [spec.name for spec in CLASS_SPECS if spec.name not in CURATED_CLASSES]
_unknown += [name for spec in CLASS_SPECS for name in spec.context if name not in CURATED_CLASSES]
assert not _unknown, f"sky class names not in the curated list: {_unknown}"


def class_mentions(spec: ClassSpec) -> tuple[str, ...]:
    """Every phrase an abstract may use to name the class (lower case)."""
    names = [spec.name, spec.singular, *spec.synonyms]
    if spec.acronym:
        names += [spec.acronym[0], spec.acronym[1]]
    return tuple(n.lower() for n in names)
