"""Which language a customer wrote in: a small, honest stop-word detector.

The method is deliberately simple and predictable. Each supported language has a list of
its most frequent function words (articles, pronouns, prepositions, auxiliaries, question
words, the words of a typical support mail). A text scores one point per token found in a
language's list, plus small bonuses for letters that only a few languages use (Swedish
``å``, German ``ß``/``ü``, Italian ``è``/``à``/``ù``/``ò``/``ì``, and ``ä``/``ö`` shared by
Swedish and German). The best candidate wins only when it has enough evidence and clearly
beats the runner-up; otherwise the caller's default is returned. A short subject plus one
line is usually enough; a lone word such as "Hej" or "Ciao" is not, and gets the default.

Nothing here guesses beyond the candidates the caller passes in (the operator's languages).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

_EN = """
a about above after again all also am an and any are as at be because been before being
below between both but by can can't cannot could did didn't do does doesn't doing don't
down during each every few for from further get got had has hasn't have haven't having he
her here hers him his how i i'm i've if in into is isn't it it's its itself just know let
like make many may me might more most much must my need no nor not now of off on once only
or other our ours out over own please problem same see she should since so some still
such than thank thanks that that's the their theirs them then there these they this those
through to too under until up us very want was wasn't way we we're well were weren't what
what's when where which while who why will with won't would you you're your yours
yourself hello hi dear regards best kind sincerely cheers help issue order orders working
work works does there's can't doesn't would've again account someone anyone something
anything everything nothing already yet today tomorrow yesterday week thing though
through able trying tried seems seem think sure right wrong new old one two three first
last next time
"""

_SV = """
i och att det som en på är av för med till den har de inte om ett han men var jag sig
från vi så kan man när år säger hon under också efter eller nu sin där vid mot ska skulle
kommer ut får finns vara hade alla andra mycket än här då sedan över bara in blir upp även
vad ingen hur måste enligt utan två sina många honom hans henne hennes dem deras vår våra
vårt min mitt mina din ditt dina er ert era ni dig mig oss hej hejsan tack vänliga
hälsningar mvh med vänlig hälsning fungerar funkar kunde borde vill ville hjälp fråga
frågor problem beställning beställningar butik butiken sidan inget inga något några
någon allt vilken vilket vilka varför vart varifrån ju väl nog alltså därför eftersom
medan innan igen redan aldrig alltid ofta idag imorgon igår vecka sen snart också gärna
behöver behövde går gick gjort gör göra gjorde ser såg tror vet visste tänkte undrar
undrade försökt försöker verkar blev blivit detta denna dessa sådan sådant hos mellan
genom kring bland samt både varje hela helt sätt fel hittar hitta ändra ändrar
"""

_IT = """
il lo la i gli le un uno una di del dello della dei degli delle da dal dallo dalla dai
dagli dalle in nel nello nella nei negli nelle su sul sullo sulla sui sugli sulle con per
tra fra a al allo alla ai agli alle e ed o ma anche come se che chi cui non più meno molto
poco tutto tutti tutta tutte questo questa questi queste quello quella quelli quelle sono
sei è siamo siete ho hai ha abbiamo avete hanno ero era eravamo erano sarà sarebbe stato
stata stati fatto fare faccio fa posso puoi può possiamo potete possono devo deve
dobbiamo voglio vuole vorrei vorremmo mi ti ci vi si ne lo li io tu lui lei noi voi loro
mio mia miei mie tuo tua suo sua nostro nostra vostro vostra buongiorno buonasera salve
ciao grazie cordiali saluti distinti gentile gentili prego aiuto problema problemi
ordine ordini negozio sito funziona funzionano perché quando dove quale quali quanto
quanti ancora già sempre mai oggi ieri domani dopo prima adesso ora qui qua lì là senza
sotto sopra dentro fuori invece però quindi allora così solo proprio davvero niente nulla
qualcosa qualche ogni altro altra altri altre stesso bene male grazie mille cosa riesco
riesce riusciamo modificare cambiare trovare impostare nuovo nuova abbiamo avuto
"""

_DE = """
der die das den dem des ein eine einer eines einem einen und oder aber doch sondern denn
weil dass ob wenn als wie wo was wer wann warum wieso weshalb welche welcher welches ich
du er sie es wir ihr mich mir dich dir uns euch ihm ihn ihnen sich mein meine meinen
meinem meiner dein deine sein seine unser unsere euer eure ist sind war waren bin bist
seid wird werden wurde wurden worden habe hast hat haben hatte hatten kann kannst können
konnte könnten muss musst müssen sollte sollen will wollen möchte möchten darf dürfen
nicht kein keine keinen nichts noch schon auch nur sehr mehr viel viele immer wieder
jetzt hier dort da dann heute morgen gestern mit von zu zum zur bei nach aus auf für über
unter vor hinter neben zwischen durch gegen ohne um an im am ins vom beim hallo guten
tag liebe lieber sehr geehrte geehrter damen herren grüße grüßen freundlichen vielen
dank danke bitte hilfe problem fehler bestellung bestellungen shop seite funktioniert
geht ging gibt gab machen macht gemacht finde finden leider bereits etwa etwas alles
jemand niemand diese dieser dieses jeder jede jedes man mal ja nein gerne trotzdem also
"""

_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(_EN.split()),
    "sv": frozenset(_SV.split()),
    "it": frozenset(_IT.split()),
    "de": frozenset(_DE.split()),
}

#: Languages the detector knows, in a stable order.
SUPPORTED: tuple[str, ...] = ("en", "sv", "it", "de")

# Letters that hint at a language, with the points each occurrence gives (capped per text).
_LETTER_HINTS: dict[str, dict[str, float]] = {
    "å": {"sv": 1.0},
    "ä": {"sv": 0.5, "de": 0.5},
    "ö": {"sv": 0.5, "de": 0.5},
    "ü": {"de": 1.0},
    "ß": {"de": 1.0},
    "è": {"it": 1.0},
    "à": {"it": 1.0},
    "ù": {"it": 1.0},
    "ò": {"it": 1.0},
    "ì": {"it": 1.0},
}
_LETTER_CAP = 3.0

# Evidence needed: at least this many points, and this much more than the runner-up.
_MIN_SCORE = 2.0
_MIN_LEAD = 1.0
# Long texts are cut: the start of a message says enough and keeps this cheap.
_MAX_CHARS = 4000

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold().replace("’", "'"))


def language_scores(text: str, candidates: Sequence[str]) -> dict[str, float]:
    """Points per candidate language the detector knows (unknown candidates are left out)."""
    sample = text[:_MAX_CHARS]
    known = [c for c in dict.fromkeys(candidates) if c in _WORDS]
    scores = dict.fromkeys(known, 0.0)
    for token in _tokens(sample):
        for lang in known:
            if token in _WORDS[lang]:
                scores[lang] += 1.0
    lowered = sample.lower()  # not casefold(): it turns ß into ss
    bonus = dict.fromkeys(known, 0.0)
    for letter, hints in _LETTER_HINTS.items():
        count = lowered.count(letter)
        if not count:
            continue
        for lang, points in hints.items():
            if lang in bonus:
                bonus[lang] += count * points
    for lang in known:
        scores[lang] += min(bonus[lang], _LETTER_CAP)
    return scores


def detect_language(text: str, candidates: Sequence[str], default: str) -> str:
    """The candidate language ``text`` is most likely written in, or ``default``.

    ``default`` is returned when the text is too short or too ambiguous to tell, when no
    candidate is known to the detector, or when two candidates score about the same.
    """
    scores = language_scores(text, candidates)
    if not scores:
        return default
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    best, best_score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    if best_score < _MIN_SCORE or best_score - runner_up < _MIN_LEAD:
        log.debug("language undecided (%s); using default %s", ranked, default)
        return default
    return best
