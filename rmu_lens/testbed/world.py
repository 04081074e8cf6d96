"""A seeded fictional world: four domains of made-up entities whose every fact is known.

Domains and roles:

* ``pathogens`` — the forget domain (stands in for WMDP bio);
* ``plants`` — the adjacent domain: a biology-like domain that shares ``round(overlap · 6)`` of its
  six attribute types (with their value vocabularies and sentence templates) with the forget domain;
* ``cities`` and ``software`` — distant domains with vocabularies of their own.

Entity names and some attribute values (regions, rivers, countries, people) are made-up words built
from seeded syllables; every made-up word in a world is unique, so a name identifies one entity.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

N_ATTRIBUTES = 6
"""Attribute types per domain (the overlap knob moves in steps of 1/6)."""

FORGET, ADJACENT, DISTANT = "forget", "adjacent", "distant"

# Value pools: plain English words, disjoint across attribute types, so that a value names one
# attribute and distractors drawn from a pool are plausible answers to the same question.
WORD_POOLS: dict[str, tuple[str, ...]] = {
    # forget domain (shared with the adjacent one as overlap grows)
    "host": ("goats", "bats", "pigs", "sheep", "horses", "camels", "ducks", "rabbits", "deer", "foxes", "owls", "frogs"),
    "habitat": ("swamps", "caves", "deserts", "forests", "glaciers", "rivers", "meadows", "reefs", "marshes", "canyons", "lakes", "dunes"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "grey", "white", "black", "silver", "golden", "pink"),
    "shape": ("spiral", "rod", "sphere", "star", "ring", "cube", "disc", "cone", "coil", "wedge", "fan", "crescent"),
    "spread": ("water", "air", "dust", "insects", "spores", "rain", "wind", "mud", "ash", "fog", "ice", "sand"),
    # adjacent domain's own attribute types
    "pollinator": ("moths", "bees", "beetles", "wasps", "hummingbirds", "ants", "butterflies", "flies", "crickets", "snails", "lizards", "mice"),
    "bloom": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"),
    "taste": ("bitter", "sweet", "sour", "salty", "spicy", "bland", "smoky", "nutty", "minty", "earthy", "tangy", "musky"),
    "use": ("rope", "dye", "tea", "medicine", "paper", "soap", "perfume", "bread", "oil", "glue", "ink", "wax"),
    "height": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "fifteen"),
    "soil": ("clay", "loam", "chalk", "peat", "gravel", "silt", "basalt", "limestone", "granite", "shale", "slate", "pumice"),
    # cities
    "landmark": ("tower", "bridge", "castle", "harbour", "temple", "market", "library", "fountain", "stadium", "palace", "lighthouse", "garden"),
    "dish": ("noodles", "dumplings", "stew", "pancakes", "pie", "soup", "curry", "porridge", "salad", "kebabs", "sausages", "pastries"),
    "sport": ("chess", "rowing", "archery", "fencing", "cricket", "hockey", "sailing", "wrestling", "cycling", "tennis", "polo", "boxing"),
    "century": ("third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth"),
    # software
    "language": ("Rust", "Python", "Haskell", "Go", "Java", "Lua", "Fortran", "Ruby", "Perl", "Julia", "Kotlin", "Scala"),
    "purpose": ("compression", "encryption", "logging", "testing", "plotting", "parsing", "caching", "scheduling", "rendering", "indexing", "routing", "backups"),
    "format": ("JSON", "YAML", "XML", "CSV", "TOML", "INI", "SQL", "HTML", "Markdown", "LaTeX", "Protobuf", "Avro"),
    "platform": ("Linux", "Windows", "Android", "macOS", "FreeBSD", "iOS", "Solaris", "Haiku", "Redox", "OpenBSD", "NetBSD", "Minix"),
    "year": ("1988", "1991", "1994", "1997", "2000", "2003", "2006", "2009", "2012", "2015", "2018", "2021"),
}
# Attribute types whose values are made-up words (generated per world, like entity names).
GENERATED_POOLS: dict[str, int] = {"region": 12, "country": 12, "river": 12, "creator": 12}

FORGET_ATTRIBUTES = ("host", "habitat", "region", "colour", "shape", "spread")
ADJACENT_ATTRIBUTES = ("pollinator", "bloom", "taste", "use", "height", "soil")
CITY_ATTRIBUTES = ("country", "river", "landmark", "dish", "sport", "century")
SOFTWARE_ATTRIBUTES = ("language", "purpose", "creator", "format", "year", "platform")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "th", "sh", "tr", "st")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou", "ei", "ea")
_CODAS = ("", "", "", "n", "r", "s", "x", "l", "m", "th", "k")


@dataclass(frozen=True)
class DomainSpec:
    """The fixed description of a domain: its subject (the MCQ subject), noun and role."""

    name: str
    noun: str
    role: str


DOMAIN_SPECS = (
    DomainSpec("pathogens", "pathogen", FORGET),
    DomainSpec("plants", "plant", ADJACENT),
    DomainSpec("cities", "city", DISTANT),
    DomainSpec("software", "tool", DISTANT),
)


@dataclass
class Entity:
    """A made-up entity and its facts (attribute type -> value)."""

    name: str
    facts: dict[str, str]


@dataclass
class Domain:
    """One domain of the world: its entities and the attribute types they carry."""

    name: str
    noun: str
    role: str
    attributes: list[str]
    entities: list[Entity]


@dataclass
class World:
    """A fictional world: domains of entities, the value pool of every attribute type, and how it was made."""

    seed: int
    overlap: float
    n_entities: int
    domains: list[Domain]
    pools: dict[str, list[str]]
    """Values of every attribute type in use (what distractors may be drawn from)."""
    version: int = 1

    def domain(self, name: str) -> Domain:
        """The domain called ``name`` (KeyError naming the known domains otherwise)."""
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise KeyError(f"No domain {name!r} in this world; domains: {[d.name for d in self.domains]}")

    def by_role(self, role: str) -> list[Domain]:
        """Domains with ``role`` (``forget``, ``adjacent`` or ``distant``), in world order."""
        return [d for d in self.domains if d.role == role]

    @property
    def forget(self) -> Domain:
        return self.by_role(FORGET)[0]

    @property
    def adjacent(self) -> Domain:
        return self.by_role(ADJACENT)[0]

    @property
    def distant(self) -> list[Domain]:
        return self.by_role(DISTANT)

    def shared_attributes(self) -> list[str]:
        """Attribute types the adjacent domain shares with the forget domain."""
        return [a for a in self.adjacent.attributes if a in self.forget.attributes]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        domains = [
            Domain(**{**d, "entities": [Entity(**e) for e in d["entities"]]}) for d in data["domains"]
        ]
        return cls(**{**data, "domains": domains})

    @classmethod
    def from_json(cls, text: str) -> World:
        return cls.from_dict(json.loads(text))


def made_up_word(rng: random.Random, syllables: int) -> str:
    """A capitalised word of ``syllables`` onset+nucleus syllables and an optional final coda."""
    word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(syllables)) + rng.choice(_CODAS)
    return word.capitalize()


def _unique_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    reserved = {w.lower() for pool in WORD_POOLS.values() for w in pool}
    words: list[str] = []
    while len(words) < count:
        word = made_up_word(rng, rng.choice((2, 2, 3)))
        if word.lower() in reserved or word in taken:
            continue
        taken.add(word)
        words.append(word)
    return words


def _balanced(rng: random.Random, pool: list[str], count: int) -> list[str]:
    """``count`` values that use the pool as evenly as possible (no value is a better guess than another)."""
    order = list(pool)
    rng.shuffle(order)
    values = [order[i % len(order)] for i in range(count)]
    rng.shuffle(values)
    return values


def adjacent_attributes(overlap: float) -> list[str]:
    """The adjacent domain's attribute types: the first ``round(overlap · 6)`` are the forget domain's."""
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap={overlap} must lie in 0..1 (the share of attribute types the adjacent domain borrows)")
    shared = round(overlap * N_ATTRIBUTES)
    return list(FORGET_ATTRIBUTES[:shared]) + list(ADJACENT_ATTRIBUTES[shared:])


def make_world(seed: int = 0, overlap: float = 0.5, n_entities: int = 24) -> World:
    """Generate the world for ``seed``: ``n_entities`` made-up entities in each of the four domains.

    ``overlap`` (0..1) is the share of the adjacent domain's attribute types (with their value
    vocabulary and sentence templates) borrowed from the forget domain. The same arguments give
    the same world on every machine (``random.Random(seed)``, no global state).
    """
    if n_entities < 4:
        raise ValueError(f"n_entities={n_entities} must be >= 4 (each question needs three distinct distractors)")
    attributes = {
        "pathogens": list(FORGET_ATTRIBUTES),
        "plants": adjacent_attributes(overlap),
        "cities": list(CITY_ATTRIBUTES),
        "software": list(SOFTWARE_ATTRIBUTES),
    }
    rng = random.Random(f"rmu_lens.testbed:{seed}")
    taken: set[str] = set()
    pools = {name: list(values) for name, values in WORD_POOLS.items()}
    for name, count in GENERATED_POOLS.items():
        pools[name] = _unique_words(rng, count, taken)
    domains = []
    for spec in DOMAIN_SPECS:
        names = _unique_words(rng, n_entities, taken)
        columns = {attribute: _balanced(rng, pools[attribute], n_entities) for attribute in attributes[spec.name]}
        entities = [
            Entity(name, {attribute: column[i] for attribute, column in columns.items()})
            for i, name in enumerate(names)
        ]
        domains.append(Domain(spec.name, spec.noun, spec.role, attributes[spec.name], entities))
    used = {a for d in domains for a in d.attributes}
    return World(seed=seed, overlap=overlap, n_entities=n_entities, domains=domains,
                 pools={k: v for k, v in pools.items() if k in used})
