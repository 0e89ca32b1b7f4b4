"""Word lists the offline understanding shares: fillers, greetings, correction markers,
irregular verbs, everyday synonyms and the words Whisper writes for spoken digits.

Data only, in one place, so the rules that use them (:mod:`agent.dialogue.utterance`,
:mod:`agent.dialogue.nlu`, :mod:`agent.dialogue.digits`) stay short and a new word is added
once. Everything is lowercase and written the way :func:`agent.dialogue.nlu.normalize` leaves
text (contractions expanded, no punctuation).
"""

from __future__ import annotations

__all__ = [
    "ACKNOWLEDGEMENTS",
    "APOLOGIES",
    "CONCEPTS",
    "CONTINUATIONS",
    "DIGIT_HOMOPHONES",
    "FUTURE_MARKERS",
    "GREETINGS",
    "HESITATIONS",
    "IRREGULAR_PAST",
    "NEGATORS",
    "PAST_MARKERS",
    "POLITENESS",
    "PRESENCE_CHECKS",
    "QUESTION_STARTS",
    "REPLACEMENTS",
    "RETRACTIONS",
]

#: Sounds and words that only hold the floor while the caller thinks.
HESITATIONS = frozenset(
    "uh uhh um umm uhm er erm ah eh hmm hm mm mhm so well like okay ok right yeah yes oh and but".split()
)
#: A turn made only of hesitations that ends on one of these is the start of a sentence.
CONTINUATIONS = frozenset("so and but um uh umm er erm well like or because".split())
#: Phrases that ask for a moment rather than answer ("hang on", "let me see").
HOLD_PHRASES: tuple[str, ...] = (
    "hang on",
    "hold on",
    "one second",
    "one sec",
    "just a second",
    "just a sec",
    "one moment",
    "just a moment",
    "give me a second",
    "give me a moment",
    "let me see",
    "let me think",
    "let me check",
    "let me look",
    "wait a second",
    "wait a moment",
    "wait",
)
GREETINGS = frozenset("hi hello hey hiya howdy yo good morning afternoon evening there".split())
#: "Hello?" on its own, or "are you there": the caller wonders whether anyone is listening.
PRESENCE_CHECKS: tuple[str, ...] = ("are you there", "is anyone there", "anybody there", "can you hear me", "hello")
APOLOGIES = frozenset("sorry excuse me pardon apologies".split())
#: Words that make an answer polite without changing it.
POLITENESS = frozenset("please thanks thank you cheers kindly".split())
#: Words that acknowledge without answering; never evidence for an intent.
ACKNOWLEDGEMENTS = frozenset("ok okay alright all right great cool fine good sure then right yeah yes".split())

#: Markers after which the caller takes back what they just said; said last, with nothing
#: after them ("Tuesday, no —"), they retract the value and the caller is about to go on.
RETRACTIONS: tuple[str, ...] = (
    "no no",
    "no wait",
    "no sorry",
    "sorry no",
    "oh no",
    "scratch that",
    "not that",
    "hang on",
    "hold on",
    "wait",
    "oops",
    "correction",
    "no",
    "nope",
    "nah",
    "i mean",
    "i meant",
    "make it",
    "make that",
    "or rather",
    "rather",
    "change it to",
    "change that to",
    "let us say",
    "lets say",
    "let me correct",
)
#: Markers that introduce a replacement but, said last, are only politeness or emphasis
#: ("Tuesday, sorry." / "Wednesday actually.").
REPLACEMENTS: tuple[str, ...] = ("sorry", "actually", "instead", "or actually", "no actually", "i am sorry")
#: Retraction markers that are also plain answers to a yes/no question.
NO_WORD_MARKERS = frozenset({"no", "nope", "nah", "no no", "oh no", "not that", "rather", "make it", "make that"})
#: Words that negate what follows ("I have not paid", "never arrived").
NEGATORS = frozenset({"not", "never", "nothing", "neither", "nor", "without"})

#: Words that start a question (a caller's digression is usually one).
QUESTION_STARTS = frozenset(
    "what when where which who whom whose why how do does did is are am can could would will should may "
    "have has any anything".split()
)

#: Tense cues for intents: "when I get paid" is not "I already paid".
PAST_MARKERS = frozenset({"already", "ago", "yesterday", "last", "did", "was", "were", "had", "been", "earlier"})
FUTURE_MARKERS = frozenset(
    {"will", "gonna", "going", "tomorrow", "next", "later", "soon", "when", "once", "until", "till", "shall", "can"}
)
#: Irregular past forms (and participles) with their base verb: a cue for the past tense.
IRREGULAR_PAST: dict[str, str] = {
    "paid": "pay",
    "bought": "buy",
    "broke": "break",
    "broken": "break",
    "sent": "send",
    "got": "get",
    "gotten": "get",
    "went": "go",
    "gone": "go",
    "came": "come",
    "took": "take",
    "taken": "take",
    "gave": "give",
    "given": "give",
    "made": "make",
    "said": "say",
    "told": "tell",
    "brought": "bring",
    "thought": "think",
    "felt": "feel",
    "left": "leave",
    "lost": "lose",
    "kept": "keep",
    "spent": "spend",
    "ran": "run",
    "fell": "fall",
    "fallen": "fall",
    "stole": "steal",
    "stolen": "steal",
    "wrote": "write",
    "written": "write",
    "done": "do",
    "did": "do",
    "saw": "see",
    "seen": "see",
    "heard": "hear",
    "found": "find",
    "dropped": "drop",
    "shipped": "ship",
    "stopped": "stop",
    "arrived": "arrive",
    "received": "receive",
    "ordered": "order",
    "charged": "charge",
    "cancelled": "cancel",
    "canceled": "cancel",
}

#: Everyday paraphrases, as phrase -> concept. Matching adds the concept to the words of both
#: the caller's sentence and the flow's examples, so "it stopped working" meets an example
#: that says "broken" without the author listing every way to say it. Phrases are matched on
#: lemmatised words ("stop work" covers "stopped working").
CONCEPTS: dict[str, str] = {
    # something does not work
    **dict.fromkeys(
        (
            "broken",
            "broke",
            "break",
            "not working",
            "not work",
            "stop working",
            "stop work",
            "stopped working",
            "quit working",
            "quit work",
            "doesnt work",
            "dead",
            "died",
            "die",
            "faulty",
            "defective",
            "damaged",
            "malfunction",
            "malfunctioning",
            "crash",
            "crashing",
            "crashes",
            "cracked",
            "smashed",
            "busted",
            "kaput",
            "acting up",
            "playing up",
            "not turn on",
            "not turning on",
            "not switch on",
            "not switching on",
            "not start",
            "not starting",
            "not charge",
            "not charging",
            "not load",
            "not loading",
            "frozen",
            "freezes",
            "freezing",
            "keeps restarting",
            "keep restarting",
            "glitch",
            "glitchy",
            "fault",
            "problem with",
            "issue with",
            "wrong with",
            "trouble with",
        ),
        "~broken",
    ),
    **dict.fromkeys(("repair", "fix", "fixed", "fixing", "mend", "mended", "service", "technician"), "~repair"),
    # things the shop sells
    **dict.fromkeys(
        (
            "laptop",
            "notebook",
            "computer",
            "pc",
            "macbook",
            "chromebook",
            "phone",
            "mobile",
            "smartphone",
            "cellphone",
            "cell phone",
            "iphone",
            "android",
            "tablet",
            "ipad",
            "tv",
            "television",
            "telly",
            "monitor",
            "headphones",
            "earbuds",
            "speaker",
            "camera",
            "console",
            "smartwatch",
            "printer",
            "router",
            "device",
            "gadget",
            "appliance",
            "charger",
            "keyboard",
        ),
        "~device",
    ),
    **dict.fromkeys(("buy", "bought", "purchase", "purchased", "got from you", "order from you"), "~purchase"),
    # money
    **dict.fromkeys(
        (
            "bill",
            "invoice",
            "statement",
            "charge",
            "charged",
            "fee",
            "debit",
            "debited",
            "overcharged",
            "double charged",
            "took money",
            "took my money",
            "taken money",
            "money from my card",
            "money from my account",
            "money off my card",
        ),
        "~bill",
    ),
    **dict.fromkeys(("refund", "money back", "reimburse"), "~refund"),
    # deliveries
    **dict.fromkeys(
        ("package", "parcel", "delivery", "shipment", "shipping", "tracking", "courier", "deliver", "arrive"),
        "~delivery",
    ),
    # people
    **dict.fromkeys(
        (
            "person",
            "human",
            "agent",
            "operator",
            "representative",
            "someone",
            "somebody",
            "colleague",
            "staff",
            "real person",
            "receptionist",
        ),
        "~person",
    ),
    # plain answers, so "nah" meets an intent whose examples say "no"
    **dict.fromkeys(
        ("yes", "yeah", "yep", "yup", "yah", "sure", "of course", "absolutely", "definitely", "please do", "go ahead"),
        "~yes",
    ),
    **dict.fromkeys(("no", "nope", "nah", "no thanks", "no thank you", "not really", "nothing else"), "~no"),
    # danger
    **dict.fromkeys(
        (
            "emergency",
            "urgent",
            "fire",
            "smoke",
            "flood",
            "flooding",
            "sparks",
            "sparking",
            "burning",
            "electric shock",
            "dangerous",
            "danger",
            "injured",
            "hurt",
            "leaking",
            "leak",
            "gas smell",
        ),
        "~urgent",
    ),
    # time off the phone
    **dict.fromkeys(("busy", "in a meeting", "driving", "not a good time", "bad time", "call back later"), "~busy"),
}

#: What Whisper writes for a digit when it mishears a read-out number ("for eight" = 4 8).
#: Only taken as digits next to other digits, so "I want to check" stays words.
DIGIT_HOMOPHONES: dict[str, str] = {
    "oh": "0",
    "o": "0",
    "nil": "0",
    "nought": "0",
    "zero": "0",
    "won": "1",
    "to": "2",
    "too": "2",
    "tu": "2",
    "tree": "3",
    "for": "4",
    "fore": "4",
    "fo": "4",
    "ate": "8",
    "nein": "9",
}
