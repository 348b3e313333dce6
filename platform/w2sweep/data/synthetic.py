"""Synthetic tasks whose labels follow rules a pretrained English model already knows.

`synthetic-sentiment`: short reviews of films, meals, hotels and books. The label is the sentiment of
the review's opinion clauses: 1 when most of them are positive. Opinion words come from large lists of
real English sentiment adjectives and phrases drawn with Zipf-like frequencies, so a few hundred
examples miss many rare words that pretraining has seen. Some negative clauses negate a positive word
("the plot was not good"), some reviews mix polarities (2 against 1), and neutral filler and
distractor sentences (sentiment words about the weather, not the subject) sit around them.
"""

from __future__ import annotations

import numpy as np

from w2sweep.data.pools import text_key
from w2sweep.data.task import DataError, Task

DEFAULT_NUM_EXAMPLES = 6000


def _words(block: str) -> list[str]:
    return [w.strip() for w in block.replace("\n", ",").split(",") if w.strip()]


# Most frequent first: the i-th word is drawn with probability proportional to 1 / (i + 1).
POSITIVE = _words("""
    good, great, excellent, wonderful, amazing, fantastic, lovely, perfect, brilliant, enjoyable,
    beautiful, delightful, superb, nice, pleasant, impressive, charming, outstanding, terrific, fabulous,
    a delight, memorable, remarkable, stunning, fun, a joy, satisfying, refreshing, engaging, a treat,
    gorgeous, exceptional, marvelous, splendid, magnificent, heartwarming, touching, moving, inspiring,
    a gem, uplifting, captivating, compelling, riveting, gripping, thrilling, exciting, witty, clever,
    funny, hilarious, a pleasure, elegant, graceful, polished, vibrant, lively, flavorful, tasty,
    delicious, worth every penny, cozy, comfortable, spotless, immaculate, spacious, welcoming,
    friendly, attentive, courteous, gracious, generous, thoughtful, helpful, a masterpiece, flawless,
    exquisite, sublime, divine, heavenly, glorious, breathtaking, dazzling, spectacular, a triumph,
    phenomenal, extraordinary, masterful, inventive, imaginative, fascinating, absorbing, enchanting,
    mesmerizing, sparkling, radiant, joyful, cheerful, blissful, admirable, commendable, worthwhile,
    rewarding, first-rate, top-notch, second to none, superlative, impeccable, sumptuous, delectable,
    luscious, succulent, invigorating, soothing, serene, tranquil, idyllic, endearing, lovable,
    adorable, pleasing, gratifying, stellar, sensational, insightful, thought-provoking, ingenious,
    deft, vivid, evocative, exhilarating, electrifying, irresistible, exemplary, laudable, peerless,
    scrumptious, mouthwatering, transcendent
""")
NEGATIVE = _words("""
    bad, terrible, awful, boring, poor, horrible, disappointing, dull, mediocre, bland, weak,
    annoying, dreadful, unpleasant, tedious, a mess, lousy, pathetic, painful, forgettable, a disaster,
    lifeless, flat, stale, a waste of time, soggy, greasy, tasteless, a letdown, inedible, disgusting,
    gross, revolting, filthy, dirty, shabby, cramped, stuffy, musty, smelly, rude, unfriendly,
    dismissive, careless, sloppy, sluggish, clumsy, amateurish, incompetent, inept, a chore, cliched,
    predictable, derivative, uninspired, unoriginal, shallow, hollow, pointless, confusing,
    incoherent, muddled, convoluted, overlong, bloated, pretentious, contrived, a slog, implausible,
    ludicrous, laughable, embarrassing, cringeworthy, wooden, stilted, clunky, grating, irritating,
    obnoxious, insufferable, unbearable, excruciating, a nightmare, miserable, tiresome, monotonous,
    repetitive, lackluster, underwhelming, unremarkable, unimpressive, substandard, shoddy,
    second-rate, a rip-off, abysmal, atrocious, appalling, horrendous, abominable, wretched, dismal,
    deplorable, lamentable, vile, nauseating, overpriced, overrated, unwatchable, joyless, charmless,
    witless, humorless, soulless, vapid, insipid, banal, trite, hackneyed, mawkish, a total flop,
    saccharine, turgid, ponderous, plodding, interminable, leaden, limp, feeble, flimsy, frustrating,
    infuriating, maddening, execrable, odious, grimy, undercooked, overcooked, rancid
""")
NEUTRAL = _words("large, small, modern, old, tall, narrow, dark, bright, simple, white, brick, glass, quiet, loud")
DISTRACTOR_WORDS = _words("good, great, nice, lovely, wonderful, bad, terrible, awful, horrible, miserable")

DOMAINS = {
    "film": {
        "subjects": ["the film", "this movie", "the picture", "the documentary", "the thriller"],
        "aspects": ["the plot", "the acting", "the soundtrack", "the ending", "the dialogue", "the pacing",
                    "the cinematography", "the cast", "the script", "the lead performance", "the special effects",
                    "the opening scene", "the villain", "the humor", "the direction"],
        "fillers": ["We watched {s} on a {day}", "I saw {s} with my {person}", "{s} runs about {num} minutes",
                    "It is based on a {source}", "{s} was shot in {place}", "I watched it at the {venue}",
                    "{s} is set during the great depression", "The score is mostly {instrument} music",
                    "It came out {when}", "The theater was {crowd} that night"],
    },
    "meal": {
        "subjects": ["the meal", "the restaurant", "the dinner", "the lunch", "this cafe"],
        "aspects": ["the food", "the service", "the soup", "the dessert", "the wine", "the bread", "the pasta",
                    "the staff", "the steak", "the salad", "the coffee", "the waiter", "the menu", "the sauce",
                    "the atmosphere"],
        "fillers": ["We had dinner there on a {day}", "I went with my {person}", "We ordered the {dish}",
                    "The menu is mostly {cuisine} food", "Our table was near the {spot}", "We paid by card",
                    "The restaurant is on {street} street", "We went there on good friday",
                    "It was a table for {small}", "The decor is {neutral}"],
    },
    "hotel": {
        "subjects": ["the hotel", "our stay", "the resort", "the inn", "this guesthouse"],
        "aspects": ["the room", "the bed", "the lobby", "the breakfast", "the pool", "the view",
                    "the reception", "the bathroom", "the shower", "the staff", "the housekeeping", "the spa",
                    "the gym", "the location", "the wifi"],
        "fillers": ["We stayed {small} nights", "I booked it for a {trip}", "Our room was on the {ordinal} floor",
                    "The hotel is near the {landmark}", "We checked in on a {day}", "The lobby is {neutral}",
                    "I stayed there with my {person}", "We arrived by {transport}",
                    "The building is {neutral} and {neutral2}", "We drove in from the great lakes"],
    },
    "book": {
        "subjects": ["the book", "this novel", "the memoir", "the story collection", "the biography"],
        "aspects": ["the prose", "the characters", "the ending", "the plot", "the narrator", "the first chapter",
                    "the dialogue", "the world-building", "the translation", "the twist", "the pacing",
                    "the heroine", "the middle section", "the epilogue", "the premise"],
        "fillers": ["I read it over a {period}", "It has {num} chapters", "The author is {nationality}",
                    "My {person} lent it to me", "I read it on a {day}", "It is set during the great depression",
                    "The cover is {color}", "It came out {when}", "I listened to the audiobook on the {transport}",
                    "It is the {ordinal} book in a series"],
    },
}
SLOTS = {
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "rainy evening",
            "holiday weekend"],
    "person": ["sister", "brother", "parents", "friend", "partner", "coworkers", "kids", "roommate", "aunt"],
    "num": [str(n) for n in range(12, 180, 7)],
    "small": ["two", "three", "four", "five", "six"],
    "source": ["true story", "novel", "comic book", "play", "short story", "video game"],
    "place": ["canada", "morocco", "new zealand", "ireland", "the desert", "a small town"],
    "venue": ["cinema downtown", "drive-in", "festival", "multiplex", "library screening"],
    "when": ["last year", "in the nineties", "this spring", "a few months ago", "in 2019"],
    "dish": ["special", "fish", "lamb", "risotto", "tasting menu", "curry", "dumplings", "burger"],
    "spot": ["window", "kitchen", "bar", "entrance", "garden", "fireplace"],
    "street": ["main", "oak", "church", "market", "harbor", "king"],
    "trip": ["work trip", "wedding", "conference", "family visit", "weekend away", "honeymoon"],
    "ordinal": ["second", "third", "fourth", "fifth", "seventh", "top"],
    "landmark": ["station", "airport", "old town", "beach", "cathedral", "river"],
    "transport": ["train", "bus", "car", "ferry", "plane"],
    "period": ["long weekend", "week", "month", "summer", "few evenings"],
    "instrument": ["piano", "jazz", "orchestral", "electronic", "guitar", "choral"],
    "crowd": ["half empty", "full", "crowded", "nearly empty", "packed"],
    "cuisine": ["french", "italian", "japanese", "mexican", "greek", "lebanese", "thai"],
    "color": ["blue", "red", "black", "green", "yellow", "white"],
    "nationality": ["canadian", "nigerian", "chilean", "korean", "irish", "swedish", "indian"],
}
DISTRACTORS = ["The weather that day was {w}", "The traffic on the way there was {w}",
               "My {person} was in a {w} mood that day", "The news that morning was {w}",
               "Work that week had been {w}"]
OPINIONS = ["{a} was {w}", "{a} is {w}", "I thought {a} was {w}", "Honestly, {a} was {w}",
            "{a} turned out to be {w}", "We found {a} {w}", "{a}: {w}", "In my opinion {a} was {w}"]
ADVERBS = ["", "", "", "", "very ", "really ", "truly ", "quite ", "pretty ", "absolutely ", "so "]
NEGATORS = ["not ", "not ", "not very ", "hardly ", "far from ", "anything but ", "never "]
NEGATION_RATE = 0.25  # share of negative opinion clauses written as a negated positive word
CLAUSE_COUNTS, CLAUSE_PROBS = [1, 2, 3], [0.4, 0.35, 0.25]  # 3 clauses: 2 for the label, 1 against


def _zipf(n: int) -> np.ndarray:
    """Probabilities [n] proportional to 1 / rank."""
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


P_POSITIVE, P_NEGATIVE = _zipf(len(POSITIVE)), _zipf(len(NEGATIVE))


def _pick(rng: np.random.Generator, items: list[str], p: np.ndarray | None = None) -> str:
    return items[rng.choice(len(items), p=p)]


def _opinion(rng: np.random.Generator, aspect: str, positive: bool) -> str:
    """One clause about `aspect` whose sentiment is `positive`; a negative one may negate a positive word."""
    negated = not positive and rng.random() < NEGATION_RATE
    word = _pick(rng, POSITIVE, P_POSITIVE) if positive or negated else _pick(rng, NEGATIVE, P_NEGATIVE)
    phrase = " " in word  # "a delight", "worth every penny": no adverb before it
    if negated:
        modifier = _pick(rng, NEGATORS).replace("very ", "" if phrase else "very ")
    else:
        modifier = "" if phrase else _pick(rng, ADVERBS)
    clause = _pick(rng, OPINIONS).format(a=aspect, w=modifier + word)
    if modifier == "not " and rng.random() < 0.5:
        clause = clause.replace(" was not ", " wasn't ").replace(" is not ", " isn't ")
    return clause


def _filler(rng: np.random.Generator, template: str, subject: str) -> str:
    values = {k: _pick(rng, v) for k, v in SLOTS.items()}
    values.update(s=subject, neutral=_pick(rng, NEUTRAL), neutral2=_pick(rng, NEUTRAL),
                  w=_pick(rng, DISTRACTOR_WORDS))
    return template.format(**values)


def _review(rng: np.random.Generator, label: int) -> str:
    domain = DOMAINS[_pick(rng, list(DOMAINS))]
    subject = _pick(rng, domain["subjects"])
    num_clauses = rng.choice(CLAUSE_COUNTS, p=CLAUSE_PROBS)
    polarities = [label] * num_clauses if num_clauses < 3 else list(rng.permutation([label, label, 1 - label]))
    targets = [subject, *domain["aspects"]]
    aspects = [targets[i] for i in rng.choice(len(targets), size=num_clauses, replace=False)]
    sentences = [_opinion(rng, a, bool(p)) for a, p in zip(aspects, polarities)]
    for _ in range(rng.choice([0, 1, 1, 2])):
        sentences.append(_filler(rng, _pick(rng, domain["fillers"]), subject))
    if rng.random() < 0.3:
        sentences.append(_filler(rng, _pick(rng, DISTRACTORS), subject))
    order = rng.permutation(len(sentences))
    return " ".join(sentences[i][0].upper() + sentences[i][1:] + "." for i in order)


def make_sentiment(num_examples: int, *, seed: int = 0) -> Task:
    """`num_examples` reviews (texts [N], labels [N]: 1 = positive), balanced to within one example,
    unique after `pools.normalize_text`, and the same for the same seed."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_examples) % 2)
    texts, seen = [], set()
    for label in labels:
        for _ in range(1000):
            text = _review(rng, int(label))
            if text_key(text) not in seen:
                break
        else:
            raise DataError(f"dataset 'synthetic-sentiment': cannot make {num_examples} unique reviews")
        seen.add(text_key(text))
        texts.append(text)
    return Task("synthetic-sentiment", texts, labels)


SYNTHETIC_TASKS = {"synthetic-sentiment": make_sentiment}
