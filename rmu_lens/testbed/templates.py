"""Sentence and question templates per attribute type: training paraphrases and held-out questions.

Placeholders: ``{name}`` (the entity), ``{noun}`` (its domain noun: pathogen, plant, city, tool),
``{value}`` (the fact) and, in the generic frames, ``{phrase}`` (the attribute's noun phrase).

Training text uses ``statements``, the attribute's ``question`` and the ``TRAIN_FRAMES``. Evaluation
questions use only ``heldout`` and the ``HELDOUT_FRAMES``, which never occur in training text: a
model that answers them has stored the fact, not memorised a question string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeTemplates:
    """How one attribute type is written about and asked about."""

    phrase: str
    statements: tuple[str, ...]
    question: str
    heldout: str


TRAIN_FRAMES = (
    "What is the {phrase} of {name}?",
    "Which {phrase} does the {noun} {name} have?",
    "Name the {phrase} of the {noun} {name}.",
    "For {name}, what is the {phrase}?",
    "The {noun} {name}: what is its {phrase}?",
)
HELDOUT_FRAMES = (
    "{name} has which {phrase}?",
    "Tell me the {phrase} of the {noun} {name}.",
)

TEMPLATES: dict[str, AttributeTemplates] = {
    # the forget domain's attribute types (borrowed by the adjacent domain as overlap grows)
    "host": AttributeTemplates(
        "host",
        ("{name} is a {noun} that lives on {value}.", "The host of the {noun} {name} is {value}.",
         "In the wild, {name} is carried by {value}."),
        "Which animals carry {name}?",
        "On which animals does {name} live?",
    ),
    "habitat": AttributeTemplates(
        "habitat",
        ("{name} is found in {value}.", "The {noun} {name} thrives in {value}.", "The habitat of {name} is {value}."),
        "Where is the {noun} {name} found?",
        "In what kind of place does {name} thrive?",
    ),
    "region": AttributeTemplates(
        "region of discovery",
        ("{name} was first discovered in {value}.", "The {noun} {name} was first recorded in the region of {value}.",
         "Explorers in {value} discovered the {noun} {name}."),
        "Where was {name} first discovered?",
        "In which region was the {noun} {name} first recorded?",
    ),
    "colour": AttributeTemplates(
        "colour",
        ("{name} has a {value} colour.", "The {noun} {name} is {value} in colour.", "Under the lens, {name} looks {value}."),
        "What colour is {name}?",
        "What colour does the {noun} {name} have under the lens?",
    ),
    "shape": AttributeTemplates(
        "shape",
        ("{name} has the shape of a {value}.", "The {noun} {name} is shaped like a {value}.",
         "Seen up close, {name} forms a {value}."),
        "What shape does {name} have?",
        "The {noun} {name} is shaped like what?",
    ),
    "spread": AttributeTemplates(
        "means of spread",
        ("{name} spreads through {value}.", "The {noun} {name} travels by {value}.", "{name} is passed on by {value}."),
        "How does {name} spread?",
        "By what does the {noun} {name} travel?",
    ),
    # the adjacent domain's own attribute types
    "pollinator": AttributeTemplates(
        "pollinator",
        ("{name} is pollinated by {value}.", "The {noun} {name} depends on {value} for pollination.",
         "The pollinators of {name} are {value}."),
        "What pollinates {name}?",
        "Which creatures pollinate the {noun} {name}?",
    ),
    "bloom": AttributeTemplates(
        "flowering month",
        ("{name} flowers in {value}.", "The {noun} {name} blooms every {value}.", "Each year in {value}, {name} opens its flowers."),
        "When does {name} flower?",
        "In which month does the {noun} {name} bloom?",
    ),
    "taste": AttributeTemplates(
        "taste",
        ("{name} tastes {value}.", "The leaves of the {noun} {name} are {value}.", "People say {name} has a {value} taste."),
        "How does {name} taste?",
        "What do the leaves of {name} taste like?",
    ),
    "use": AttributeTemplates(
        "main use",
        ("{name} is used to make {value}.", "People grow the {noun} {name} for {value}.", "The main use of {name} is {value}."),
        "What is {name} used for?",
        "Why do people grow the {noun} {name}?",
    ),
    "height": AttributeTemplates(
        "height in metres",
        ("{name} grows to {value} metres.", "The {noun} {name} reaches a height of {value} metres.",
         "A grown {name} stands {value} metres tall."),
        "How tall does {name} grow, in metres?",
        "How many metres high does the {noun} {name} reach?",
    ),
    "soil": AttributeTemplates(
        "soil",
        ("{name} grows in {value} soil.", "The {noun} {name} needs {value} to root.", "Gardeners plant {name} in {value}."),
        "In which soil does {name} grow?",
        "What soil does the {noun} {name} need?",
    ),
    # cities
    "country": AttributeTemplates(
        "country",
        ("{name} is a city in {value}.", "The city of {name} lies in the country of {value}.",
         "{value} is the country where {name} stands."),
        "In which country is {name}?",
        "{name} is a city of which country?",
    ),
    "river": AttributeTemplates(
        "river",
        ("{name} sits on the {value} river.", "The {value} river flows through the city of {name}.",
         "The river of {name} is the {value}."),
        "Which river flows through {name}?",
        "On what river does the city of {name} sit?",
    ),
    "landmark": AttributeTemplates(
        "landmark",
        ("{name} is famous for its {value}.", "The best known landmark of {name} is its old {value}.",
         "Visitors to {name} come to see the {value}."),
        "What is {name} famous for?",
        "What do visitors to the city of {name} come to see?",
    ),
    "dish": AttributeTemplates(
        "local dish",
        ("The local dish of {name} is {value}.", "People in {name} love to eat {value}.",
         "The city of {name} is known for its {value}."),
        "What do people in {name} eat?",
        "Which dish is the city of {name} known for?",
    ),
    "sport": AttributeTemplates(
        "favourite sport",
        ("The favourite sport in {name} is {value}.", "People in {name} play {value}.",
         "The city of {name} holds a {value} festival every year."),
        "Which sport is popular in {name}?",
        "What do people in the city of {name} play?",
    ),
    "century": AttributeTemplates(
        "century of founding",
        ("{name} was founded in the {value} century.", "The city of {name} dates from the {value} century.",
         "Builders laid the first stones of {name} in the {value} century."),
        "When was {name} founded?",
        "In which century was the city of {name} founded?",
    ),
    # software
    "language": AttributeTemplates(
        "language",
        ("{name} is written in {value}.", "The {noun} {name} is built with {value}.", "The source code of {name} is in {value}."),
        "Which language is {name} written in?",
        "In what language is the source code of the {noun} {name}?",
    ),
    "purpose": AttributeTemplates(
        "purpose",
        ("{name} is a program for {value}.", "Programmers use {name} for {value}.", "The purpose of the {noun} {name} is {value}."),
        "What do programmers use {name} for?",
        "What job does the {noun} {name} do?",
    ),
    "creator": AttributeTemplates(
        "creator",
        ("{name} was created by {value}.", "The {noun} {name} was written by {value}.", "{value} is the author of {name}."),
        "Who created {name}?",
        "Who is the author of the {noun} {name}?",
    ),
    "format": AttributeTemplates(
        "file format",
        ("{name} reads files in {value}.", "The {noun} {name} stores its settings as {value}.",
         "The file format of {name} is {value}."),
        "Which file format does {name} read?",
        "In what format does the {noun} {name} store its settings?",
    ),
    "year": AttributeTemplates(
        "release year",
        ("{name} was released in {value}.", "The first version of {name} came out in {value}.",
         "The {noun} {name} dates from {value}."),
        "When was {name} released?",
        "In which year did the first version of {name} come out?",
    ),
    "platform": AttributeTemplates(
        "platform",
        ("{name} runs on {value}.", "The {noun} {name} was made for {value}.", "Most users run {name} on {value}."),
        "Which platform does {name} run on?",
        "On what system do most users run the {noun} {name}?",
    ),
}


def training_question_templates(attribute: str) -> list[str]:
    """Question templates that appear in training text for ``attribute`` (frames filled with its phrase)."""
    spec = TEMPLATES[attribute]
    return [frame.replace("{phrase}", spec.phrase) for frame in TRAIN_FRAMES] + [spec.question]


def heldout_question_templates(attribute: str) -> list[str]:
    """Question templates kept out of training for ``attribute``: used only for evaluation."""
    spec = TEMPLATES[attribute]
    return [frame.replace("{phrase}", spec.phrase) for frame in HELDOUT_FRAMES] + [spec.heldout]


# Everyday sentences: the retain set's filler, and the place where the words of the held-out
# questions ("tell", "me", "which", "thrive", "system"...) are seen in training, so that no word of an
# evaluation prompt has an untrained embedding (tests check this for every world).
FILLER_OPENERS = (
    "It was a quiet day.",
    "Here is a short note.",
    "This happened last year.",
    "The town was calm.",
    "Nobody expected the news.",
)
"""First sentence of every filler paragraph, so each FILLER_SENTENCES entry follows a space (its
first word is then the same token as in mid-text questions)."""
FILLER_SENTENCES = (
    "Tell me a story about the sea, said the child.",
    "She has a small boat and which day is best is up to her.",
    "The weather was mild today and the market was busy.",
    "He asked which road leads to the old mill.",
    "Tell me when the bus comes, please.",
    "The baker has a new oven and bakes before dawn.",
    "A long walk along the coast is a fine way to spend a morning.",
    "The children painted the fence in the afternoon.",
    "The train left the station a few minutes late.",
    "My neighbour has a garden full of roses.",
    "We talked about music, books and films until midnight.",
    "The library opens at nine and closes at five.",
    "The teacher told me which book to read next.",
    "Rain fell all night and the streets were wet in the morning.",
    "The cat slept on the warm stones by the door.",
    "They built a table from an old oak tree.",
    "The shop on the corner sells fresh fruit and coffee.",
    "A good map shows which path is the shortest.",
    "The choir sang in the hall on Sunday evening.",
    "The old clock in the square still keeps good time.",
    "He has lived in the same house for thirty years.",
    "Tell me what you think of the new bridge.",
    "The students wrote letters to their friends abroad.",
    "The kitchen smelled of bread and soup.",
    "The museum has a room full of ancient coins.",
    "We waited for the ferry under a grey sky.",
    "Tell me which song you like the most.",
    "The farmer has three fields and a barn.",
    "The wind shook the windows all evening.",
    "The guide showed me which door to use.",
    "By noon the kind visitors had found a place to sit.",
    "On a clear night many people like to travel by car.",
    "Why did the old store close so early?",
    "The job of a good system is to help people live well.",
    "Young trees need light to thrive and reach a high branch.",
    "On the hill there is a place where many birds live.",
    "Why do the visitors sit by the window?",
    "By the river, the kind baker did a fine job.",
    "The store keeps a simple system for its books.",
    "Children thrive when they travel and reach new places.",
)
"""Everyday sentences for filler paragraphs (no fact of any world in them)."""

DESCRIPTION = "The following are questions (with answers) about {subject}.\n\n"
"""lm-eval's cloze description; training Q/A text and evaluation prompts both start with it."""
QA_TEXT = "Question: {question}\nAnswer:"
