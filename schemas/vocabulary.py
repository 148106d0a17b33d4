"""The paper's curated description classes and evaluation queries (paper-method.md section 4-5).

Shared by the synthetic sky (its ground-truth labels are drawn from these names), the extractive
summarizer, and the zero-shot evaluation, so one list serves all three.
"""

CURATED_CLASSES: tuple[str, ...] = (
    "star forming galaxies", "lyman alpha", "dust", "crowded stellar field", "core-collapse supernova",
    "cosmology", "gravitational lensing", "supernovae", "diffuse galaxies", "globular clusters",
    "stellar populations", "interstellar medium", "black holes", "dark matter", "galaxy clusters",
    "galaxy evolution", "galaxy formation", "quasars", "circumstellar disks", "exoplanets",
    "Kuiper Belt objects", "solar system objects", "cosmic web structure", "distant galaxies",
    "galaxy mergers", "galaxy interactions", "star formation", "stellar winds", "brown dwarfs",
    "white dwarfs", "nebulae", "star clusters", "galaxy archeology", "galactic structure",
    "active galactic nuclei", "gamma-ray bursts", "stellar nurseries", "intergalactic medium",
    "dark energy", "dwarf galaxies", "barred spiral galaxies", "irregular galaxies", "starburst galaxies",
    "low surface brightness galaxies", "ultra diffuse galaxies", "circumgalactic medium",
    "intracluster medium", "cosmic dust", "interstellar chemistry", "star formation histories",
    "initial mass function", "stellar proper motions", "binary star systems", "open clusters",
    "pre-main sequence stars", "protostars", "protoplanetary disks", "jets and outflows",
    "interstellar shocks", "planetary nebulae", "supernova remnants", "red giants", "Cepheid variables",
    "RR Lyrae variables", "stellar abundances", "stellar dynamics", "compact stellar remnants",
    "Einstein rings", "trans-Neptunian objects", "cosmic microwave background", "reionization epoch",
    "first stars", "first galaxies", "high-redshift quasars", "primordial black holes",
    "resolved binaries", "binary stars",
)

PAPER_QUERIES: tuple[str, ...] = (
    "globular cluster", "dwarf galaxy", "SN1987A", "strong lensing", "galaxy clusters",
    "interstellar medium", "dark matter", "spiral galaxies", "lyman alpha", "comets",
)

assert len(CURATED_CLASSES) == 77, len(CURATED_CLASSES)
