"""ingest.dedup: shingles, fingerprints, the decision and the canonical policy (pure, no store).

Texts come from the labelled corpus (fixtures/dedup) so the cases are real-looking
articles, copies and look-alikes; the corpus-level acceptance test runs the whole
pipeline over it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import datasketch
import pytest

from tests.dedup_corpus import load
from ingest import dedup, paraphrase
from ingest.config import DedupConfig
from ingest.features import decode
from ingest.models import Candidate

ROOT = Path(__file__).resolve().parent.parent
CFG = DedupConfig()
SCHEME = dedup.scheme_for(CFG)
ITEMS = {i.id: i for i in load()}
FLOOD = ITEMS["a-floods-tavera-2025--death-toll/wire"]
FLOOD_TEASER = ITEMS["a-floods-tavera-2025--death-toll/teaser-metro"]
FLOOD_UPDATE = ITEMS["a-floods-tavera-2025--death-toll/update-toll-64"]
FLOOD_SYNDICATED = ITEMS["a-floods-tavera-2025--death-toll/syndicated"]  # disclaimers added
INSURANCE = ITEMS["a-floods-tavera-2025--insurance-costs/wire"]  # same event, different article
MARKETS_11 = ITEMS["a-markets-close-daily--2025-03-11/wire"]
MARKETS_12 = ITEMS["a-markets-close-daily--2025-03-12/wire"]  # same template, next day's figures


def candidate(item_id: int, cluster_id: int, text: str, *, canonical: bool = True, title: str = "t", **flags) -> Candidate:
    return Candidate(item_id=item_id, cluster_id=cluster_id, title=title, text=text, is_canonical=canonical, **flags)


def chrome(text: str, site: str) -> str:
    """A republisher's page: navigation, a caption, related headlines and a footer around the text."""
    return "\n\n".join([
        "Home | World | Business | Sport | Opinion | Video",
        "Rescuers search the mud in Benisor (Photo: file)",
        text,
        f"More from {site}",
        "Markets slide as oil jumps on supply fears",
        "City council approves new cycle lanes after long debate",
        "Ten things to do in the capital this weekend",
        f"Follow {site} on Facebook, X and Instagram for the latest updates.",
    ])


# ---------------------------------------------------------------------------- shingles and hashes


def test_shingles_are_word_ngrams_of_normalised_text() -> None:
    assert dedup.shingles("The  QUICK, brown fox!", 2) == {"the quick", "quick brown", "brown fox"}
    assert dedup.shingles("ﬁve alarms", 2) == {"five alarms"}  # NFKC folds the ligature
    assert dedup.shingles("Two words", 3) == {"two words"}  # shorter than a shingle: one shingle
    assert dedup.shingles("", 3) == frozenset()


def test_content_hash_ignores_case_spacing_and_punctuation() -> None:
    assert dedup.content_hash("Rain, rain: go away!") == dedup.content_hash("rain rain  go AWAY")
    assert dedup.content_hash("rain go away") != dedup.content_hash("rain stay away")


def test_fingerprint_is_deterministic_and_depends_on_the_scheme() -> None:
    a, b = dedup.fingerprint(FLOOD.text, SCHEME), dedup.fingerprint(FLOOD.text, SCHEME)
    assert a == b
    assert len(a.signature) == 4 * CFG.num_perm
    other_seed = dedup.fingerprint(FLOOD.text, dedup.scheme_for(replace(CFG, seed=2)))
    assert other_seed.signature != a.signature
    body_paragraphs = [p for p in FLOOD.paragraphs if len(p.split()) >= dedup.PASSAGE_WORDS]
    features = decode(a.features)
    long_sentences = [s for s in features.sentences if len(s.words) >= paraphrase.SENTENCE_KEY_WORDS]
    assert len(features.entities) >= paraphrase.MIN_KEY_ENTITIES
    # bands of the whole text + bands of the lead + one key per body paragraph + the
    # rare-entity bands + one key per long sentence
    expected = (
        SCHEME.bands + SCHEME.lead_perm // SCHEME.rows + min(len(body_paragraphs), SCHEME.paragraph_keys)
        + SCHEME.entity_bands + min(len(long_sentences), SCHEME.sentence_keys)
    )
    assert len(a.band_keys) == expected
    assert len(a.probe_keys) == SCHEME.entity_bands  # the nearer neighbouring time bucket's
    assert not set(a.probe_keys) & set(a.band_keys)


def test_estimated_jaccard_tracks_the_exact_value() -> None:
    exact, _, _ = dedup.compare(dedup.shingles(FLOOD.text, 3), dedup.shingles(FLOOD_UPDATE.text, 3), CFG)
    estimate = dedup.estimated_jaccard(
        dedup.fingerprint(FLOOD.text, SCHEME).signature, dedup.fingerprint(FLOOD_UPDATE.text, SCHEME).signature
    )
    # standard error sqrt(J(1-J)/128) ~ 0.04: four of them is a generous bound
    assert abs(estimate - exact) < 0.16


def test_importing_dedup_defers_scipy_and_leaves_datasketch_whole() -> None:
    # a fresh interpreter: this test process may have imported scipy already
    script = (
        "import sys; from ingest import dedup; assert 'scipy.integrate' not in sys.modules, 'scipy imported';"
        "import numpy as np, xxhash; from datasketch import MinHash, MinHashLSH;"
        "m = MinHash(num_perm=128, seed=1, hashfunc=xxhash.xxh32_intdigest, scheme='affine32');"
        "m.update_batch([b'a b c', b'b c d']);"
        "assert (dedup.signature_of(['a b c', 'b c d'], 128, 1) == np.asarray(m.hashvalues, dtype=np.uint32)).all();"
        "lsh = MinHashLSH(threshold=0.5, num_perm=128); lsh.insert('x', m); assert lsh.query(m) == ['x'];"
        "assert 'scipy.integrate' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_scheme_records_datasketch_major_and_how_keys_are_made() -> None:
    scheme = SCHEME.as_dict()
    assert scheme["datasketch_major"] == int(datasketch.__version__.split(".")[0])
    for key in ("num_perm", "seed", "shingle_size", "bands", "rows", "minhash_scheme", "hash_name", "paragraph_keys"):
        assert key in scheme


def test_a_teaser_and_a_chrome_wrapped_copy_share_index_keys_with_the_original() -> None:
    original = set(dedup.fingerprint(FLOOD.text, SCHEME).band_keys)
    assert original & set(dedup.fingerprint(FLOOD_TEASER.text, SCHEME).band_keys)
    assert original & set(dedup.fingerprint(chrome(FLOOD.text, "metro"), SCHEME).band_keys)
    assert not original & set(dedup.fingerprint(MARKETS_11.text, SCHEME).band_keys)


# ---------------------------------------------------------------------------- decide


def test_without_candidates_the_decision_needs_only_the_shingle_count() -> None:
    for text in (FLOOD.text, "Too short to merge by similarity"):
        count = dedup.fingerprint(text, SCHEME).shingle_count
        assert dedup.decide(text, [], CFG, shingle_count=count) == dedup.decide(text, [], CFG)
    assert dedup.decide(FLOOD.text, [], CFG).reason == "no candidates"
    assert dedup.decide("", [], CFG, shingle_count=5).reason.startswith("5 shingles < min_shingles=30")


def test_same_canonical_url_is_a_duplicate_whatever_the_text() -> None:
    decision = dedup.decide("completely different words here", [candidate(7, 3, FLOOD.text, same_url=True)], CFG)
    assert (decision.kind, decision.cluster_id, decision.method) == ("duplicate", 3, "url")


def test_same_normalised_text_is_a_duplicate() -> None:
    decision = dedup.decide(FLOOD.text.upper(), [candidate(7, 3, FLOOD.text, same_content=True)], CFG)
    assert (decision.kind, decision.method, decision.similarity) == ("duplicate", "content_hash", 1.0)


def test_a_copy_with_an_update_joins_by_jaccard() -> None:
    decision = dedup.decide(FLOOD_UPDATE.text, [candidate(1, 1, FLOOD.text)], CFG)
    assert (decision.kind, decision.cluster_id, decision.method) == ("duplicate", 1, "minhash")
    assert decision.similarity >= CFG.threshold


def test_a_teaser_joins_by_containment() -> None:
    decision = dedup.decide(FLOOD_TEASER.text, [candidate(1, 1, FLOOD.text)], CFG)
    assert (decision.kind, decision.method) == ("duplicate", "containment")
    assert decision.similarity < CFG.threshold <= decision.containment


def test_a_copy_diluted_by_site_chrome_joins_on_shared_paragraphs() -> None:
    teaser_page = chrome(FLOOD_TEASER.text, "metro")
    sim = dedup.similarity(dedup.prepare(teaser_page, 3), dedup.prepare(FLOOD.text, 3), CFG)
    assert sim.jaccard < CFG.threshold and sim.containment < CFG.containment  # numbers alone would miss it
    decision = dedup.decide(teaser_page, [candidate(1, 1, FLOOD.text)], CFG)
    assert (decision.kind, decision.method) == ("duplicate", "passages")


def test_shared_paragraphs_are_off_when_min_passages_is_zero() -> None:
    decision = dedup.decide(chrome(FLOOD_TEASER.text, "m"), [candidate(1, 1, FLOOD.text)], replace(CFG, min_passages=0))
    assert decision.kind == "new"


def test_a_different_article_on_the_same_event_stays_apart() -> None:
    decision = dedup.decide(INSURANCE.text, [candidate(1, 1, FLOOD.text)], CFG)
    assert decision.kind == "new"
    assert "closest item 1" in decision.reason


def test_a_daily_template_with_other_figures_stays_apart() -> None:
    decision = dedup.decide(MARKETS_12.text, [candidate(1, 1, MARKETS_11.text)], CFG)
    assert decision.kind == "new"


@pytest.mark.parametrize("text", ["Breaking: earthquake hits Kessar", "Floods: death toll rises to 51 in the Tavera valley, officials say."])
def test_very_short_texts_never_merge_by_similarity(text: str) -> None:
    decision = dedup.decide(text, [candidate(1, 1, text + " More soon.")], CFG)
    assert decision.kind == "new"
    assert "min_shingles" in decision.reason


def test_texts_too_short_to_compare_join_by_url_only() -> None:
    """Issue 16 item 3: two one-line texts alike say nothing of being one story, whatever their titles."""
    text = "Breaking: earthquake hits Kessar"
    for title in ("Quake", "Storm"):
        same_text = dedup.decide(text, [candidate(1, 1, text, title=title, same_content=True)], CFG)
        assert same_text.kind == "new" and "too short to compare" in same_text.reason
    same_url = dedup.decide(text, [candidate(1, 1, "Other words entirely", same_url=True)], CFG)
    assert (same_url.kind, same_url.method, same_url.cluster_id) == ("duplicate", "url", 1)
    # long enough to compare: the same normalised text is one story
    long = FLOOD.text
    assert dedup.decide(long, [candidate(1, 1, long, same_content=True)], CFG).method == "content_hash"


def _bridge() -> str:
    """A roundup that carries most of two different stories (the flood toll and the insurance piece)."""
    return "\n\n".join(FLOOD.paragraphs[:8] + INSURANCE.paragraphs[:8])


def test_a_bridging_member_cannot_pull_a_different_story_into_its_cluster() -> None:
    # cluster 1: the flood report (canonical) and a roundup that also carries the insurance story
    members = [candidate(1, 1, FLOOD.text), candidate(2, 1, _bridge(), canonical=False)]
    bridge_alone = dedup.similarity(dedup.prepare(INSURANCE.text, 3), dedup.prepare(_bridge(), 3), CFG)
    assert bridge_alone.method  # the insurance story does match the bridge ...
    decision = dedup.decide(INSURANCE.text, members, CFG)
    assert decision.kind == "new"  # ... but the flood report (canonical) does not support it


def test_a_bridging_text_cannot_carry_a_lone_item_of_another_story_into_a_cluster() -> None:
    candidates = [candidate(1, 1, FLOOD.text), candidate(5, 5, INSURANCE.text)]
    decision = dedup.decide(_bridge(), candidates, CFG)
    assert decision.kind == "duplicate"
    assert decision.absorb == ()  # the insurance item does not match the flood cluster's canonical


def test_a_lone_teaser_that_came_first_is_taken_in_by_the_next_copy() -> None:
    # the teaser arrived first and stands alone (cluster 9); the original is in cluster 1 already
    candidates = [candidate(1, 1, FLOOD.text), candidate(9, 9, FLOOD_TEASER.text)]
    decision = dedup.decide(FLOOD_SYNDICATED.text, candidates, CFG)
    assert decision.cluster_id == 1
    assert decision.absorb == (9,)


def test_the_best_matching_cluster_wins() -> None:
    candidates = [candidate(1, 1, INSURANCE.text), candidate(2, 2, FLOOD.text), candidate(3, 3, MARKETS_11.text)]
    decision = dedup.decide(FLOOD_UPDATE.text, candidates, CFG)
    assert (decision.cluster_id, decision.matched_item_id) == (2, 2)


# ---------------------------------------------------------------------------- canonical policy

T0 = datetime(2025, 10, 30, 8, 0, tzinfo=timezone.utc)


def member(item_id: int, published: datetime | None, fetched: datetime, priority: int = 0, length: int = 100) -> dedup.Member:
    return dedup.Member(item_id, published, fetched, priority, length)


def test_earliest_prefers_published_then_fetched() -> None:
    wire = member(2, T0, T0 + timedelta(hours=3))
    copy = member(1, T0 + timedelta(hours=1), T0)
    undated_early = member(3, None, T0 - timedelta(hours=5))
    assert min([copy, wire, undated_early], key=lambda m: dedup.canonical_key(m, "earliest")) is undated_early
    assert min([copy, wire], key=lambda m: dedup.canonical_key(m, "earliest")) is wire
    same_time = [member(5, T0, T0 + timedelta(minutes=2)), member(4, T0, T0 + timedelta(minutes=1))]
    assert min(same_time, key=lambda m: dedup.canonical_key(m, "earliest")).item_id == 4


def test_priority_prefers_the_higher_priority_then_earliest() -> None:
    blog = member(1, T0, T0, priority=0)
    wire = member(2, T0 + timedelta(hours=2), T0 + timedelta(hours=2), priority=10)
    wire_later = member(3, T0 + timedelta(hours=3), T0 + timedelta(hours=3), priority=10)
    assert min([blog, wire, wire_later], key=lambda m: dedup.canonical_key(m, "priority")) is wire


def test_longest_prefers_the_most_complete_text_then_earliest() -> None:
    teaser = member(1, T0, T0, length=400)
    full = member(2, T0 + timedelta(hours=1), T0 + timedelta(hours=1), length=3000)
    full_later = member(3, T0 + timedelta(hours=2), T0 + timedelta(hours=2), length=3000)
    assert min([teaser, full, full_later], key=lambda m: dedup.canonical_key(m, "longest")) is full


# ---------------------------------------------------------------------------- the corpus, through the pipeline


@pytest.fixture(scope="module")
def corpus_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Scores of the real pipeline (ingest --once on a fresh store) and of the baselines."""
    from tests.dedup_scoring import baseline_minhash, baseline_title, baseline_url, noisy, run_pipeline, score

    items = load()
    out = {}
    for name, variant in (("corpus", items), ("noisy", noisy(items))):
        out[name] = score(variant, run_pipeline(variant, tmp_path_factory.mktemp(name)))
        out[f"{name}/minhash_raw"] = score(variant, baseline_minhash(variant))
    out["guid_url_only"] = score(items, baseline_url(items))
    out["exact_title"] = score(items, baseline_title(items))
    return out


@pytest.mark.parametrize("variant", ["corpus", "noisy"])
def test_acceptance_targets_hold_on_the_corpus(corpus_scores: dict[str, dict], variant: str) -> None:
    s = corpus_scores[variant]
    assert s["no_paraphrase"]["f1"] >= 0.95, s["no_paraphrase"]
    assert s["no_paraphrase"]["precision"] >= 0.99, s["no_paraphrase"]
    assert s["hard_negatives"]["precision"] >= 0.99, s["hard_negatives"]
    assert s["relations"]["teaser"]["recall"] >= 0.9, s["relations"]["teaser"]
    assert s["relations"]["edited (all but teaser, paraphrase)"]["recall"] >= 0.9


def test_every_baseline_is_visibly_behind(corpus_scores: dict[str, dict]) -> None:
    ours = corpus_scores["corpus"]["no_paraphrase"]["f1"]
    for baseline in ("corpus/minhash_raw", "noisy/minhash_raw", "guid_url_only", "exact_title"):
        assert corpus_scores[baseline]["no_paraphrase"]["f1"] <= ours - 0.1, baseline


BRIEFING = ITEMS["c-floods-tavera-2025--morning-briefing/newsletter"]  # quotes the openings of two stories


def test_a_teaser_joins_its_full_story_not_a_digest_that_quotes_it() -> None:
    digest = dedup.similarity(dedup.prepare(FLOOD_TEASER.text, 3), dedup.prepare(BRIEFING.text, 3), CFG)
    full = dedup.similarity(dedup.prepare(FLOOD_TEASER.text, 3), dedup.prepare(FLOOD.text, 3), CFG)
    assert digest.method and digest.jaccard > full.jaccard  # the digest looks at least as close ...
    assert full.same_lead and not digest.same_lead  # ... but only the full story opens with the teaser
    for order in ([candidate(1, 1, FLOOD.text), candidate(5, 5, BRIEFING.text)],
                  [candidate(5, 5, BRIEFING.text), candidate(9, 9, FLOOD.text)]):
        decision = dedup.decide(FLOOD_TEASER.text, order, CFG)
        assert decision.cluster_id == order[0].cluster_id if order[0].text == FLOOD.text else decision.cluster_id == 9
        assert decision.absorb == ()  # the lone digest is not a copy of the teaser: it stays apart


# ---------------------------------------------------------------------------- paraphrases, templates, time

# Texts written for these tests: a wire story, a sentence-by-sentence rewrite of it
# (synonyms swapped, names and figures kept), and a weekly template report in two
# editions (same wording, other figures) -- the cases of docs/dedup.md.
WIRE = "\n\n".join([
    "Firefighters in Kestrelmouth battled a blaze aboard the ferry Valdoria on Tuesday after it caught fire "
    "near the Brannock lighthouse with 412 passengers on board, the coastguard said.",
    "All passengers were taken off by lifeboats within two hours and 17 people were treated for smoke "
    "inhalation at the Saint Orlov hospital, according to harbour master Ilse Vantongeren.",
    "The Valdoria, operated by Corvane Lines, had left the port of Kestrelmouth at 7.45 am for its daily "
    "crossing to the island of Tessaly, a journey of about 3.5 hours.",
    "Investigators from the maritime safety board were expected to board the vessel once the fire was out, "
    "and Corvane Lines suspended all crossings until further notice.",
    "Vantongeren said the crew had followed the emergency procedures well and praised the lifeboat teams "
    "from Kestrelmouth and Brannock for their fast response.",
])
SPUN = "\n\n".join([
    "Fire crews in Kestrelmouth fought flames on the ferry Valdoria on Tuesday once the ship was engulfed "
    "close to the Brannock lighthouse carrying 412 travellers, coastguard officials stated.",
    "Every traveller was evacuated by lifeboat inside two hours while 17 individuals received care for "
    "smoke inhalation at Saint Orlov hospital, harbour master Ilse Vantongeren reported.",
    "The Valdoria, run by Corvane Lines, departed the harbour of Kestrelmouth at 7.45 am on its usual daily "
    "trip to Tessaly island, a voyage lasting roughly 3.5 hours.",
    "Inspectors of the maritime safety board planned to go aboard the ship after the blaze was extinguished, "
    "while Corvane Lines halted every crossing until further notice.",
    "Vantongeren stated the crew had carried out the emergency procedures properly and commended the "
    "lifeboat crews of Kestrelmouth and Brannock for reacting quickly.",
])
OTHER_EVENT = "\n\n".join([
    "Corvane Lines said on Wednesday it would resume its Kestrelmouth crossings next week with a chartered "
    "vessel while the Valdoria remains in dry dock at the Brannock yard.",
    "The company's chief executive Mirela Ostapovich told reporters that the fire had started in an engine "
    "room and that insurers would cover the repairs, expected to take three months.",
    "Passenger groups in Tessaly have asked the maritime safety board to publish its findings quickly, "
    "saying islanders depend on the daily crossings for work and school.",
    "Ostapovich said refunds would be offered to all ticket holders and that the chartered ferry would "
    "carry up to 300 passengers on each trip.",
])


def weekly(week: str, change: str, total: str, assets: str, gold: str) -> str:
    """One edition of a weekly reserves template: the same sentences, that week's figures."""
    return "\n\n".join([
        f"Veltrania's foreign exchange reserves rose by {change} billion to {total} billion in the week ended "
        f"{week}, the Bank of Veltrania said on Friday.",
        f"Foreign currency assets, the largest component of the reserves, increased by {assets} billion, "
        "according to the weekly statistical supplement of the Bank of Veltrania.",
        f"Gold reserves went up by {gold} billion during the week, the central bank said.",
        "The reserves include foreign currency assets, gold, special drawing rights and the reserve position "
        "with the International Monetary Fund, and are reported every Friday by the Bank of Veltrania.",
    ])


WEEK_8 = weekly("March 8", "2.164", "584.248", "1.657", "0.412")
WEEK_15 = weekly("March 15", "4.532", "588.780", "3.871", "0.503")


def today_in_history(weekday: str, number: str, year: str) -> str:
    """One year's edition of an almanac column: the same historical entries, another year's first lines."""
    return "\n\n".join([
        f"Today is {weekday}, March 26, the {number}th day of {year}. There are 280 days left in the year.",
        "On March 26, 1827, the composer Ludwig van Beethoven died in Vienna at the age of 56 after a long illness.",
        "In 1945, during the Second World War, the island of Iwo Jima was fully secured by American forces after "
        "a final desperate attack.",
        "In 1979, a peace treaty between Egypt and Israel was signed at the White House by Anwar Sadat and "
        "Menachem Begin, with Jimmy Carter as witness.",
    ])


def cand(item_id: int, cluster_id: int, text: str, *, when: datetime | None = None, **kw) -> Candidate:
    """A candidate as the store gives it: with stored features and signature."""
    fp = dedup.fingerprint(text, SCHEME, when)
    return Candidate(
        item_id=item_id, cluster_id=cluster_id, title="", text=text, is_canonical=kw.pop("canonical", True),
        features=fp.features, signature=fp.signature, shingle_count=fp.shingle_count, when=when, **kw,
    )


def decide_new(text: str, candidates: list[Candidate], cfg: DedupConfig = CFG, when: datetime | None = None):
    fp = dedup.fingerprint(text, SCHEME, when)
    return dedup.decide(text, candidates, cfg, shingle_count=fp.shingle_count, features=fp.features,
                        when=when, signature=fp.signature)


def test_a_paraphrased_copy_joins_on_aligned_sentences_and_rare_entities() -> None:
    shingled = dedup.similarity(dedup.prepare(SPUN, 3), dedup.prepare(WIRE, 3), CFG)
    assert not shingled.method and shingled.jaccard < 0.15  # word shingles do not see it
    decision = decide_new(SPUN, [cand(1, 1, WIRE)])
    assert (decision.kind, decision.method, decision.cluster_id) == ("duplicate", "paraphrase", 1)
    signals = {s.name: s for s in decision.evidence}
    assert signals["sentences"].passed and signals["sentences"].value >= CFG.sentence_share
    assert signals["entities"].value >= CFG.min_entities and signals["numbers_disagree"].value == 0
    assert "paraphrase:" in decision.reason and "rare entities shared" in decision.reason


def test_a_different_article_on_the_same_event_stays_apart_despite_its_names() -> None:
    decision = decide_new(OTHER_EVENT, [cand(1, 1, WIRE), cand(2, 1, SPUN, canonical=False)])
    assert decision.kind == "new"
    assert any(s.name == "entities" for s in decision.evidence)  # the closest candidate's signals are kept


def test_without_paraphrase_evidence_the_spun_copy_stays_apart() -> None:
    off = replace(CFG, paraphrase=False)
    decision = decide_new(SPUN, [cand(1, 1, WIRE)], off)
    assert decision.kind == "new" and not any(s.name == "sentences" for s in decision.evidence)
    assert dedup.scheme_for(off).entity_bands == 0 and dedup.scheme_for(off).sentence_keys == 0


def test_a_template_report_of_another_week_stays_apart_though_its_words_match() -> None:
    words = dedup.similarity(dedup.prepare(WEEK_15, 3), dedup.prepare(WEEK_8, 3), CFG)
    assert words.method  # the shingles alone would merge the two editions
    decision = decide_new(WEEK_15, [cand(1, 1, WEEK_8)])
    assert decision.kind == "new" and "numbers say another day" in decision.reason
    assert not {s.name: s for s in decision.evidence}["numbers_disagree"].passed
    # the same week's report, copied, still joins
    copy = WEEK_8.replace("the central bank said", "the bank said in a statement")
    assert decide_new(copy, [cand(1, 1, WEEK_8)]).kind == "duplicate"


# One monthly tax release written up by two outlets: the same figures and names in the
# same order, each in its own words, but the second sets last month's figure where the
# first sets last year's.
RELEASE = "\n\n".join([
    "Goods and services tax receipts in Veltrania reached 14,957 million dorins in February, the finance ministry "
    "in Ostrava Nova said on Wednesday.",
    "The February receipts were 12.4 per cent higher than a year earlier, when the ministry counted 13,307 million dorins.",
    "Of the total, the central levy brought in 2,763 million dorins and the provincial levy 3,510 million dorins, "
    "with the rest coming from the integrated levy.",
    "Finance minister Orsolya Brenvik said collections had now stayed above 14,000 million dorins for the third month running.",
])
RELEASE_ELSEWHERE = "\n\n".join([
    "Veltrania's tax take on goods and services rose to 14,957 million dorins last February, figures published by "
    "the ministry of finance in Ostrava Nova showed on Wednesday.",
    "February's receipts came in 3.2 per cent above a month before, when the ministry had tallied 14,494 million dorins.",
    "The central levy yielded 2,763 million dorins and the provincial levy 3,510 million dorins, while the "
    "integrated levy made up the remainder of the total.",
    "Minister Orsolya Brenvik noted that collections have remained over 14,000 million dorins for three straight months.",
])


def test_two_outlets_on_one_data_release_stay_apart_when_one_sentence_states_other_figures() -> None:
    decision = decide_new(RELEASE_ELSEWHERE, [cand(1, 1, RELEASE)])
    assert decision.kind == "new", decision.reason
    signals = {s.name: s for s in decision.evidence}
    # the entities and sentences reach a paraphrase's bars, and the general guard lets one
    # disagreeing sentence among three agreeing pass: the paraphrase rule allows none
    assert signals["sentences"].passed and signals["entities"].passed and signals["entity_share"].passed
    assert signals["numbers_disagree"].passed and not signals["paraphrase_numbers_disagree"].passed
    assert "too many disagree for a paraphrase" in decision.reason
    # the spun copy, whose sentences restate every figure, still joins
    spun = {s.name: s for s in decide_new(SPUN, [cand(1, 1, WIRE)]).evidence}
    assert spun["paraphrase_numbers_disagree"].passed


def test_an_almanac_edition_of_another_year_stays_apart() -> None:
    this_year, last_year = today_in_history("Tuesday", "86", "2024"), today_in_history("Sunday", "85", "2023")
    assert dedup.similarity(dedup.prepare(this_year, 3), dedup.prepare(last_year, 3), CFG).method
    decision = decide_new(this_year, [cand(1, 1, last_year)])
    assert decision.kind == "new"
    assert not {s.name: s for s in decision.evidence}["years_disagree"].passed


def test_paraphrase_matches_need_the_time_window() -> None:
    near, far = T0 + timedelta(days=2), T0 + timedelta(days=10)
    assert decide_new(SPUN, [cand(1, 1, WIRE, when=T0)], when=near).method == "paraphrase"
    late = decide_new(SPUN, [cand(1, 1, WIRE, when=T0)], when=far)
    assert late.kind == "new"
    assert not {s.name: s for s in late.evidence}["window_hours"].passed
    # exact copies are not held to the window
    assert decide_new(WIRE, [cand(1, 1, WIRE, when=T0, same_content=True)], when=far).method == "content_hash"


def test_a_lone_paraphrase_that_came_first_is_taken_in_when_it_matches_the_canonical() -> None:
    syndicated = WIRE + "\n\nThis story was provided by a wire service and has not been edited by our staff."
    candidates = [cand(1, 1, WIRE), cand(9, 9, SPUN)]
    decision = decide_new(syndicated, candidates)
    assert decision.cluster_id == 1 and decision.absorb == (9,)
    # a lone paraphrase of another story is not carried along
    unrelated = [cand(1, 1, WIRE), cand(9, 9, OTHER_EVENT)]
    assert decide_new(syndicated, unrelated).absorb == ()


def test_a_lone_copy_that_came_first_is_taken_in_when_the_canonical_backs_it() -> None:
    # cluster 1: the wire story and a spun copy that joined it; cluster 2: an earlier,
    # shorter cut of that spun copy, alone. A later copy of the spun text matches both:
    # the lone cut shares few word triples with the wire canonical (the old absorb rule
    # asked for half of them), but the canonical backs it as it would have, had it come
    # after the copy: it moves, as a stored absorb.
    paragraphs = SPUN.split("\n\n")
    member, lone = SPUN.replace("Fire crews", "Firefighting crews"), "\n\n".join(paragraphs[:3])
    new = member + "\n\nRead more stories from the coast on our harbour page."
    candidates = [cand(1, 1, WIRE), cand(2, 1, member, canonical=False), cand(3, 2, lone)]
    decision = decide_new(new, candidates)
    assert (decision.cluster_id, decision.absorb) == (1, (2,)), decision.reason
    assert "takes in lone item(s) of cluster(s) 2" in decision.reason
    # without the canonical's backing (the lone cut is another story's) it stays alone
    other = decide_new(new + "\n\n" + OTHER_EVENT, [cand(1, 1, WIRE), cand(2, 1, member, canonical=False),
                                                     cand(3, 2, OTHER_EVENT)])
    assert 2 not in other.absorb, other.reason


def test_candidates_far_apart_on_their_signatures_skip_exact_shingling() -> None:
    markets, teaser = dedup.fingerprint(MARKETS_11.text, SCHEME), dedup.fingerprint(FLOOD_TEASER.text, SCHEME)
    far = dedup._far(markets.signature, markets.shingle_count, cand(1, 1, FLOOD.text), CFG)
    assert far is not None and far.estimated and not far.method
    assert dedup._far(teaser.signature, teaser.shingle_count, cand(1, 1, FLOOD.text), CFG) is None
    # the decision is the one exact shingling makes
    for text in (FLOOD_UPDATE.text, FLOOD_TEASER.text, INSURANCE.text, MARKETS_12.text):
        candidates = [cand(1, 1, FLOOD.text), cand(2, 2, MARKETS_11.text)]
        with_signatures = decide_new(text, candidates)
        exact = dedup.decide(text, candidates, CFG, features=dedup.fingerprint(text, SCHEME).features)
        assert (with_signatures.kind, with_signatures.cluster_id, with_signatures.method) == (
            exact.kind, exact.cluster_id, exact.method)


def test_entity_keys_propose_a_paraphrase_within_the_window_only() -> None:
    wire = set(dedup.fingerprint(WIRE, SCHEME, T0).band_keys)
    spun = dedup.fingerprint(SPUN, SCHEME, T0 + timedelta(days=1))
    assert not wire & set(dedup.fingerprint(SPUN, SCHEME).band_keys[: SCHEME.bands])  # word bands miss it
    assert wire & (set(spun.band_keys) | set(spun.probe_keys))
    far = dedup.fingerprint(SPUN, SCHEME, T0 + timedelta(days=3 * CFG.window / 86400 + 1))
    entity_only = set(far.band_keys) - set(dedup.fingerprint(SPUN, SCHEME, T0).band_keys)
    assert not wire & (entity_only | set(far.probe_keys))


def test_items_a_window_apart_meet_across_a_bucket_edge() -> None:
    # every time within a window of another sits in its bucket or in the probed neighbour
    width = SCHEME.entity_bucket
    for offset in (0.0, 0.2, 0.49, 0.51, 0.9, 0.999):
        start = datetime.fromtimestamp(width * (1000 + offset), tz=timezone.utc)
        for apart in (-CFG.window, -1.0, 1.0, CFG.window):
            later = start + timedelta(seconds=apart)
            stored = paraphrase.entity_keys(decode(dedup.fingerprint(SPUN, SCHEME, start).features).entities,
                                            paraphrase.buckets(start, SCHEME)[0], SCHEME)
            b = dedup.fingerprint(SPUN, SCHEME, later)
            assert stored and set(stored) <= set(b.band_keys) | set(b.probe_keys), (offset, apart)


# ---------------------------------------------------------------------------- features


def test_sentences_keep_numbers_and_dates_and_align_in_order() -> None:
    from ingest import sentences as S

    assert S.split("Mr. Vantongeren said 17 were hurt. Nov. 28 was cold! Was it? Yes.") == [
        "Mr. Vantongeren said 17 were hurt.", "Nov. 28 was cold!", "Was it?", "Yes."]
    a, b = (S.sentence(S.tokens(f"Reserves rose for the week ended {d}, the bank said."))
            for d in ("March 8", "March 15"))
    assert a.words == b.words and S.numbers_agree(a, b) is False  # the dates differ
    same = S.sentence(S.tokens("All forty-one workers were rescued after 17 days, officials said on Tuesday."))
    spun = S.sentence(S.tokens("Rescuers freed all 41 trapped workers following seventeen (17) days, officials said."))
    assert S.numbers_agree(same, spun) is True  # "forty-one" is 41: {41, 17} on both sides
    assert S.tokens("forty-one and Twenty two, but forty") == ["41", "and", "22", "but", "forty"]
    story = decode(dedup.fingerprint(WIRE, SCHEME).features).sentences
    spun = decode(dedup.fingerprint(SPUN, SCHEME).features).sentences
    forward, backward = S.align(story, spun), S.align(story, tuple(reversed(spun)))
    assert forward.aligned >= 4 and forward.coverage >= CFG.sentence_share > backward.coverage


def test_a_rewrite_that_rounds_figures_or_puts_the_day_first_agrees_with_its_source() -> None:
    from ingest import sentences as S

    def said(text: str) -> S.Sentence:
        return S.sentence(S.tokens(text))

    source = said("Harbour dues rose by 4.532 million dorins to 593.279 million dorins in the week ended March 8.")
    rounded = said("Port dues climbed 4.53 million dorins to 593.3 million dorins for the week ending 8 March.")
    assert S.numbers_agree(source, rounded) is True  # rounded figures, the day before the month
    other_week = said("Port dues climbed 4.528 million dorins to 591.2 million dorins for the week ending 15 March.")
    assert S.numbers_agree(source, other_week) is False  # 4.528 is not 4.532 rounded; another date
    assert S.roundings("593.279") == ["593.28", "593.3", "593"] and S.roundings("12.8") == []
    assert S.roundings("19495") == ["19500", "19500"] and S.roundings("2000") == [] and S.roundings("4.5") == []
    assert S.numbers_agree(said("Dues stood at 4.53 million dorins, the port said."),
                           said("Dues stood at 4.5 million dorins, the port said.")) is False  # two digits are too few
    # the month's own day wins over a number before it: "3 March 8" is March 8 and a 3
    assert said("Ships 3 March 8 sailed.").numbers == said("Ships 3 sailed March 8.").numbers


def test_figures_are_entities_by_their_leading_digits() -> None:
    from ingest import features
    from ingest.entities import entities, leading
    from ingest.sentences import split, tokens

    assert [leading(v) for v in ("593.279", "593.28", "4.532", "19495", "412", "0.125")] == [
        "593", "593", "4.53", "19500", "412", "0.125"]
    one, other = (entities([tokens(p) for p in split(t)]) for t in (
        "Dues at Kestrelmouth reached 593.279 million dorins.", "Kestrelmouth dues hit 593.3 million dorins."))
    assert "#593" in one & other
    # dotted versions and dates are no amounts: kept as they are, never rounded
    assert leading("1.2.30") == "1.2.30" and features.extract("Kestrelmouth 1.2.30 shipped on 10.05.2024.").entities


def test_entities_are_rare_names_and_long_numbers_not_years_or_sentence_openers() -> None:
    from ingest.entities import entities
    from ingest.sentences import split, tokens

    found = entities([tokens(p) for p in split("Kestrelmouth fire. The ferry Valdoria carried 412 people in 2024 "
                                               "past Baltimore and Brannock.")])
    assert found == {"valdoria", "#412", "brannock"}  # Baltimore is common, 2024 a year, Kestrelmouth opened a sentence


def test_features_survive_the_stored_form() -> None:
    from ingest import features

    for text in (WIRE, SPUN, WEEK_8, FLOOD.text, ""):
        extracted = features.extract(text)
        assert features.decode(features.encode(extracted)) == extracted
    assert features.decode(b"") == features.EMPTY
    assert features.decode(bytes([features.VERSION + 1]) + b"\x00" * 8) == features.EMPTY


# ---------------------------------------------------------------------------- through the pipeline and the store


def _feed_file(path: Path, items: list[tuple[str, str, str]]) -> str:
    """An RSS file of (guid, title, text) items, paragraphs as <p>; returns its path."""
    from tests.loopback import rss

    body = [(guid, f"https://{path.stem}.example/{guid}", title, "".join(f"<p>{p}</p>" for p in text.split("\n\n")))
            for guid, title, text in items]
    path.write_bytes(rss(body, title=path.stem))
    return str(path)


def test_pipeline_stores_the_evidence_joins_the_paraphrase_and_keeps_short_texts_apart(tmp_path, write_config, cli):
    import sqlite3

    from tests.conftest import ingest_once

    feeds = {
        "wire": [("w1", "Ferry fire", WIRE), ("w2", "Gallery", "Photo gallery: the ferry fire")],
        "farm": [("f1", "Ferry blaze", SPUN), ("f2", "Gallery", "Photo gallery: the ferry fire")],
        "bank": [("b1", "Reserves", WEEK_8)],
        "bank2": [("b2", "Reserves", WEEK_15)],
    }
    sources = [{"name": name, "url": _feed_file(tmp_path / f"{name}.xml", items)} for name, items in feeds.items()]
    config = write_config(store_url=f"sqlite:///{tmp_path / 'store.db'}", sources=sources)
    report = ingest_once(config)
    assert not report.failed
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = {guid: (item_id, cluster, method, evidence) for item_id, guid, cluster, method, evidence in conn.execute(
            "SELECT id, guid, cluster_id, decision_method, decision_evidence FROM items")}
        stored = conn.execute("SELECT count(*) FROM items WHERE features IS NOT NULL").fetchone()[0]
    assert stored == 6
    assert rows["f1"][1] == rows["w1"][1]
    # sources are polled concurrently: whichever came second joined the first
    second = next(guid for guid in ("f1", "w1") if rows[guid][2] != "none")
    assert rows[second][2] == "paraphrase"
    assert {s["name"] for s in json.loads(rows[second][3])} >= {"sentences", "entities", "numbers_disagree"}
    assert rows["w2"][1] != rows["f2"][1]  # one line alike, same title: too short to say (issue 16 item 3)
    assert rows["b1"][1] != rows["b2"][1]  # two weeks of one template
    shown = cli("show", str(rows[second][0]), "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "pass  sentences" in shown.stdout and "numbers_disagree" in shown.stdout


def test_a_store_made_before_the_features_is_upgraded_and_asks_for_resign(tmp_path) -> None:
    import sqlite3

    from ingest.errors import SignatureMismatch
    from ingest.store.migrations import SCHEMA_VERSION
    from ingest.store import Store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old_scheme = {k: v for k, v in SCHEME.as_dict().items()
                  if k not in ("features", "entity_bands", "entity_rows", "entity_bucket", "sentence_keys")}
    Store.open(url, old_scheme).close()
    with sqlite3.connect(tmp_path / "old.db") as conn:  # as a store of schema version 1 was
        conn.execute("ALTER TABLE items DROP COLUMN features")
        conn.execute("ALTER TABLE items DROP COLUMN decision_evidence")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(SignatureMismatch, match="features: store has None.*ingest resign"):
        Store.open(url, SCHEME.as_dict())
    with sqlite3.connect(tmp_path / "old.db") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert {"features", "decision_evidence"} <= columns and version == str(SCHEMA_VERSION)


# ---------------------------------------------------------------------------- real syndicated copies (../shared)


@pytest.fixture(scope="module")
def real_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The check and tune scores of one real pipeline run over ../shared/realcopies (about 10 s)."""
    from tests import realcopies

    items = realcopies.load()
    if items is None:
        pytest.skip(f"{realcopies.FOLDER} is absent: the real copies are third-party data kept outside the repository")
    labels = realcopies.run_pipeline(items, tmp_path_factory.mktemp("realcopies"))
    return {split: realcopies.score(items, labels, split) for split in realcopies.SPLITS}


@pytest.mark.xfail(strict=True, reason=(
    "issue 13 item 4 not reached yet: check F1 0.776 at precision 1 (recall 0.634), 0 hard-negative pairs; "
    "the missed pairs are rewrites that neither shingles nor the sentence alignment tell from other articles "
    "on the event, and teasers that rewrite their lead (docs/dedup.md); remove this mark when it passes"
))
def test_real_copies_meet_the_check_targets(real_scores: dict[str, dict]) -> None:
    """Issue 13 item 4, default settings, the check half (thresholds were chosen on tune)."""
    check = real_scores["check"]
    pairwise, spun, negatives = check["pairwise"], check["spun_items_joined"], check["hard_negatives"]
    assert pairwise["precision"] >= 0.97, pairwise
    assert spun["joined"] >= 0.4 * spun["items"], spun
    assert negatives["pairs_merged"] <= round(0.01 * negatives["items"]), negatives  # 96 on check: at most 1
    assert pairwise["f1"] >= 0.80, pairwise


def test_real_copies_tune_half_keeps_its_precision_and_check_joins_spun_copies(real_scores: dict[str, dict]) -> None:
    tune, check = real_scores["tune"], real_scores["check"]
    assert tune["pairwise"]["precision"] >= 0.97 and tune["hard_negatives"]["pairs_merged"] == 0, tune
    spun = check["spun_items_joined"]
    assert spun["joined"] >= 0.4 * spun["items"], spun  # the target that holds on check
    assert check["pairwise"]["f1"] > 0.6, check["pairwise"]  # far above the decision before (0.453)
    # precision holds on check too: outlets writing up one data release stay apart
    assert check["pairwise"]["precision"] >= 0.97, check["pairwise"]
    assert check["hard_negatives"]["pairs_merged"] <= round(0.01 * check["hard_negatives"]["items"]), check
