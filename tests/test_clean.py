"""clean(): built-in rules as data, paragraph scopes, per-source patterns, learned paragraphs, the labelled set."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import pytest

from tests.clean_cases import load_cases, run_case, score
from ingest.clean import (
    EDGE_SHORT_CHARS,
    MAX_SHAPE_RUN,
    RuleSet,
    builtin_rules,
    builtin_vocabulary,
    clean,
    expand,
    load_rules,
    paragraph_fingerprint,
    ruleset,
)
from tests import realdata
from ingest.config import ExtractConfig, from_dict
from ingest.errors import ConfigError
from ingest.extract import extract
from ingest.models import Document, FetchResult
from ingest.parse import parse

ROOT = Path(__file__).resolve().parent.parent
RULES = builtin_rules()
BUILTIN = ruleset(True)
ARTICLE = [
    "The council voted 7 to 2 on Tuesday to approve a budget that raises spending on roads by 12 percent.",
    "Opponents said the plan relied on optimistic forecasts of property tax revenue over the next three years.",
    "The mayor said the first repairs would begin in the spring, starting with the bridges on the east side.",
]
SEED_FIRST = "Bursts of gunfire echoed through the streets of Kazakhstan’s largest city Thursday"
SEED_LAST = "“Literally in three days a revolution has taken place"


def doc(*paragraphs: str) -> Document:
    return Document(title="Council approves budget", text="\n\n".join(paragraphs))


# ---------------------------------------------------------------- the rule file


def test_rules_are_sorted_named_and_have_examples() -> None:
    names = [r.name for r in RULES]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(r.example for r in RULES), [r.name for r in RULES if not r.example]
    assert len(RULES) >= 15


def placed(rule, text: str) -> Document:
    """``text`` where ``rule`` works: opening the article (prefix and start-only rules) or after it."""
    return doc(text, *ARTICLE) if rule.scope == "prefix" or rule.edges == "start" else doc(*ARTICLE, text)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_matches_its_example_and_not_its_keeps(rule) -> None:
    """Every example is removed by its rule alone; every `keeps` text survives it."""
    only = RuleSet((rule,))
    cleaned = clean(placed(rule, rule.example), only)
    assert [r.rule for r in cleaned.removals] == [rule.name]
    assert cleaned.removals[0].text.strip() in rule.example
    for keep in rule.keeps:
        kept = clean(placed(rule, keep), only)
        assert keep in kept.paragraphs, f"{rule.name} removed a text it must keep"
        assert kept.removals == ()


@pytest.mark.parametrize("rule", [r for r in RULES if r.scope == "suffix"], ids=lambda r: r.name)
def test_suffix_rule_cuts_its_example_off_any_paragraph(rule) -> None:
    """A credit run into a paragraph (first, middle or last) goes; the paragraph's prose stays."""
    for at in range(len(ARTICLE)):
        glued = ARTICLE[:at] + [f"{ARTICLE[at]} {rule.example}"] + ARTICLE[at + 1:]
        cleaned = clean(doc(*glued), RuleSet((rule,)))
        assert cleaned.paragraphs == ARTICLE, (rule.name, at)
        assert [(r.rule, r.position, r.text) for r in cleaned.removals] == [(rule.name, "inline", rule.example.strip())]


@pytest.mark.parametrize("phenomenon,text", [
    ("wire disclaimer", "(This story has not been edited by Devdiscourse staff and is auto-generated from a syndicated feed.)"),
    ("headline reworked", "(Only the headline of this report may have been reworked by Business Standard staff; the rest of the content is auto-generated from a syndicated feed.)"),
    ("disclaimer heading", "Post Disclaimer"),
    ("appeared first on", "The post Council approves budget appeared first on Harbour Times."),
    ("republication", "This article is republished from The Conversation under a Creative Commons license."),
    ("republished with permission", "Republished with permission from The Lowland Observer."),
    ("cookie banner", "We use cookies to give you the best possible experience on our website. By continuing to browse, you agree to our use of cookies."),
    ("newsletter", "Sign up for our daily newsletter"),
    ("inbox prompt", "Get the morning’s top stories delivered to your inbox."),
    ("share prompt", "Share this article"),
    ("social prompt", "Follow us on Telegram for the latest business news."),
    ("also read", "Also Read: Kazakhstan declares state of emergency"),
    ("read more", "READ MORE: Freight rates jump on European routes"),
    ("wire credit", "(Reporting by Bart Meijer; Editing by Louise Heavens)"),
    ("copyright", "© 2025 AFP"),
    ("byline", "By JANE DOE, Reuters"),
])
def test_issue_list_of_boilerplate_is_covered(phenomenon: str, text: str) -> None:
    cleaned = clean(doc(*ARTICLE, text), BUILTIN)
    assert cleaned.paragraphs == ARTICLE, phenomenon


def test_load_rules_rejects_a_bad_scope_and_bad_regex() -> None:
    with pytest.raises(ConfigError, match="rule 0: scope must be one of"):
        load_rules('[[rule]]\nname = "x"\nscope = "middle"\npattern = "a"\n')
    with pytest.raises(ConfigError, match="rule 0:"):
        load_rules('[[rule]]\nname = "x"\nscope = "whole"\npattern = "(a"\n')
    with pytest.raises(ConfigError, match="rule 0: edges must be one of"):
        load_rules('[[rule]]\nname = "x"\nscope = "edge"\nedges = "middle"\npattern = "a"\n')


def test_word_lists_expand_into_patterns_and_bad_lists_fail() -> None:
    """{name} in a pattern stands for the list's terms; unknown names, regex in a [vocabulary] list: errors."""
    doc_ = '''
[vocabulary]
widget = ["share", "sign up", "e-mail"]
[grammar]
opening = ["(?:please )?{widget}"]
[[rule]]
name = "x"
scope = "whole"
pattern = "{opening} now"
example = "Please sign up now"
'''
    (rule,) = load_rules(doc_)
    assert rule.matches("Please sign   up now") and rule.matches("e-mail now") and not rule.matches("sign now")
    assert set(rule.terms) == {"grammar:x" for _ in ()} | {"opening:(?:please )?{widget}", "widget:share",
                                                            "widget:sign up", "widget:e-mail"}
    (without,) = load_rules(doc_, drop=frozenset({"widget:share"}))
    assert not without.matches("share now") and without.matches("sign up now")
    with pytest.raises(ConfigError, match="unknown vocabulary"):
        load_rules('[[rule]]\nname = "x"\nscope = "whole"\npattern = "{nothing}"\n')
    with pytest.raises(ConfigError, match="is not lower-case words"):
        load_rules('[vocabulary]\nwidget = ["sh(are"]\n')
    with pytest.raises(ConfigError, match="a pattern or a words test"):
        load_rules('[vocabulary]\nw = ["share"]\n[[rule]]\nname = "x"\nscope = "whole"\npattern = "a"\n'
                   'words = { need = ["w"], most = 3 }\n')


def test_literal_lists_match_exactly_their_words() -> None:
    """A [vocabulary] list compiles to a trie: it matches each listed word and phrase, and nothing in between."""
    vocabulary = builtin_vocabulary()
    for name, words in vocabulary.items():
        if not words.literal:
            continue
        pattern = re.compile(expand("{" + name + "}", vocabulary)[0], re.IGNORECASE)
        assert all(pattern.fullmatch(w) for w in words.terms), name
        near = {w[:-1] for w in words.terms if len(w) > 1} | {w + "zz" for w in words.terms}
        assert not [w for w in near - set(words.terms) if pattern.fullmatch(w)], name


def test_words_test_takes_lines_of_listed_words_only() -> None:
    """A line of nothing but widget words goes anywhere; a content word, or a sign of code, keeps it."""
    (rule,) = [r for r in RULES if r.name == "ui-words-line"]
    only = RuleSet((rule,))
    for chrome in ("Open the photo gallery", "Go to the comments ↓", "12 Comments", "• Share", "Your Privacy Choices"):
        assert clean(doc(ARTICLE[0], chrome, *ARTICLE[1:]), only).paragraphs == ARTICLE, chrome
    for prose in ("View of the harbour", "Share of voters", "print(x)  # share", "Watch out for ice"):
        assert prose in clean(doc(ARTICLE[0], prose, *ARTICLE[1:]), only).paragraphs, prose


def test_a_link_after_an_ellipsis_is_cut_and_the_teaser_stays() -> None:
    """A teaser cut with an ellipsis and closed by its link keeps its words; only the link goes."""
    cut = ("The council voted on Tuesday to approve a budget that raises spending on roads by 12 percent, "
           "while opponents said the plan relied on optimistic forecasts of…")
    for link in ("Read more", " Read more »", "[more]"):
        cleaned = clean(doc(*ARTICLE[:2], cut + link), BUILTIN)
        assert cleaned.paragraphs == [*ARTICLE[:2], cut], link
        assert [r.text for r in cleaned.removals] == [link.strip()], link
    # after a sentence, the ellipsis is the link's and goes with it
    cleaned = clean(doc(*ARTICLE[:2], ARTICLE[2] + " … Read more"), BUILTIN)
    assert cleaned.paragraphs == ARTICLE


def test_every_rule_file_is_loaded_and_names_are_unique() -> None:
    """builtin_rules reads every ingest/rules/*.toml; a name used twice would make removals ambiguous."""
    folder = ROOT / "ingest" / "rules"
    names = [t["name"] for f in sorted(folder.glob("*.toml")) for t in tomllib.loads(f.read_text(encoding="utf-8")).get("rule", [])]
    assert sorted(names) == [r.name for r in RULES]
    assert {r.scope for r in RULES} == {"whole", "edge", "tail", "suffix", "prefix"}


def test_needs_prefilter_never_hides_a_match() -> None:
    """A rule's ``needs`` only skips work: every text its pattern matches holds one of them."""
    texts = [t for _, t in line_cases("boilerplate.toml") + line_cases("prose.toml")]
    texts += [t for r in RULES for t in (r.example, *r.keeps)]
    texts += [p for case in CASES for p in run_case(case).document.paragraphs]
    for rule in (r for r in RULES if r.needs):
        for text in texts:
            found = rule.fullmatch(text) if rule.scope in ("whole", "suffix") or rule.full else rule.regex.match(text)
            assert not found or rule.may_match(text), (rule.name, text)


# ---------------------------------------------------------------- classes of boilerplate (fixtures/clean/lines)

LINES = ROOT / "fixtures" / "clean" / "lines"


def glued(at: str, text: str) -> list[str]:
    """ARTICLE with ``text`` where ``at`` says: its own paragraph (start, middle, end) or run in."""
    if at == "start":
        return [text, *ARTICLE]
    if at == "middle":
        return [ARTICLE[0], text, *ARTICLE[1:]]
    if at == "end":
        return [*ARTICLE, text]
    if at == "suffix":
        return [ARTICLE[0], f"{ARTICLE[1]} {text}", ARTICLE[2]]
    if at == "prefix":
        return [f"{text} {ARTICLE[0]}", *ARTICLE[1:]]
    raise ValueError(at)


def line_cases(name: str) -> list[tuple[str, str]]:
    return [(row["at"], row["text"]) for row in tomllib.loads((LINES / name).read_text(encoding="utf-8"))["line"]]


@pytest.mark.parametrize("at,text", line_cases("boilerplate.toml"), ids=lambda v: v[:40] if len(v) > 8 else v)
def test_boilerplate_of_every_class_is_removed_wherever_sites_put_it(at: str, text: str) -> None:
    """Reworded boilerplate of each class goes, and the article comes back whole."""
    cleaned = clean(doc(*glued(at, text)), BUILTIN)
    assert cleaned.paragraphs == ARTICLE, [r.rule for r in cleaned.removals]


@pytest.mark.parametrize("at,text", line_cases("prose.toml"), ids=lambda v: v[:40] if len(v) > 8 else v)
def test_article_lines_that_look_like_boilerplate_stay(at: str, text: str) -> None:
    """Short closing lines, sentences opening with a prompt's words, subheadings: all stay."""
    cleaned = clean(doc(*glued(at, text)), BUILTIN)
    assert text in cleaned.paragraphs and cleaned.removals == (), [(r.rule, r.text) for r in cleaned.removals]


# ---------------------------------------------------------------- scopes


def test_quote_of_a_disclaimer_inside_a_paragraph_keeps_the_paragraph() -> None:
    quoting = ("On one site, the copied story ended with a footer. The notice read: “This story has not been "
               "edited by staff and is auto-generated from a syndicated feed”, which critics said misled readers.")
    cleaned = clean(doc(ARTICLE[0], quoting, ARTICLE[1]), BUILTIN)
    assert quoting in cleaned.paragraphs and cleaned.removals == ()
    # even as the last paragraph: the rule matches from a paragraph's start only
    cleaned = clean(doc(*ARTICLE, quoting), BUILTIN)
    assert cleaned.paragraphs[-1] == quoting


def test_edge_rule_in_the_middle_of_the_article_is_not_applied() -> None:
    disclaimer = "Disclaimer: the author owns shares in two of the companies named in this article."
    long_middle = ARTICLE[1] + " " + ARTICLE[2]
    cleaned = clean(doc(ARTICLE[0], disclaimer, long_middle, long_middle, long_middle), BUILTIN)
    assert disclaimer in cleaned.paragraphs


def test_disclaimer_behind_an_unknown_short_prompt_is_still_removed() -> None:
    unknown = "Tap the bell icon for alerts."  # no rule knows it; it must not shield the disclaimer
    disclaimer = "Disclaimer: the author owns shares in two of the companies named in this article."
    cleaned = clean(doc(*ARTICLE, disclaimer, unknown), BUILTIN)
    assert cleaned.paragraphs == ARTICLE + [unknown]
    assert [(r.rule, r.position) for r in cleaned.removals] == [("disclaimer-prefixed", "end")]


def test_a_long_paragraph_ends_the_edge_zone() -> None:
    disclaimer = "Disclaimer: the author owns shares in two of the companies named in this article."
    long_last = "A long closing paragraph of real prose. " * 8
    assert len(long_last) > EDGE_SHORT_CHARS
    cleaned = clean(doc(*ARTICLE, disclaimer, long_last.strip()), BUILTIN)
    assert disclaimer in cleaned.paragraphs


def test_tail_sentence_glued_to_the_last_paragraph() -> None:
    last = ARTICLE[-1] + " The post Council approves budget appeared first on Harbour Times."
    cleaned = clean(doc(*ARTICLE[:-1], last), BUILTIN)
    assert cleaned.paragraphs == ARTICLE
    assert [(r.rule, r.position) for r in cleaned.removals] == [("appeared-first-on", "end")]


def test_removals_are_in_document_order() -> None:
    cleaned = clean(doc("By JANE DOE, Reuters", ARTICLE[0], "Also Read: Roads plan explained", *ARTICLE[1:],
                        "(Reporting by Jane Doe; Editing by Ed Osmond)", "Share this article"), BUILTIN)
    assert [(r.position, r.rule) for r in cleaned.removals] == [
        ("whole", "credit-line"), ("whole", "also-read"), ("whole", "bracketed-credit"), ("whole", "share-prompt"),
    ]
    assert cleaned.paragraphs == ARTICLE


def test_never_cleans_an_article_down_to_nothing() -> None:
    only_boilerplate = doc("Share this article", "Post Disclaimer")
    cleaned = clean(only_boilerplate, BUILTIN)
    assert cleaned.text == only_boilerplate.text
    assert cleaned.notes == ("cleaning would remove every paragraph: kept as is",)


def test_credit_run_into_any_paragraph_is_cut_and_the_prose_stays() -> None:
    caption = "Crews worked through the night to clear the road. Photograph: Harbour Times/Jane Doe"
    last = ARTICLE[2] + " (AGENCY)"
    cleaned = clean(doc(ARTICLE[0], caption, ARTICLE[1], last), BUILTIN)
    assert cleaned.paragraphs == [ARTICLE[0], "Crews worked through the night to clear the road.", ARTICLE[1], ARTICLE[2]]
    assert [(r.rule, r.position, r.text) for r in cleaned.removals] == [
        ("photo-credit", "inline", "Photograph: Harbour Times/Jane Doe"), ("agency-tag", "inline", "(AGENCY)"),
    ]


def test_agency_tag_opening_the_lead_is_cut_but_a_dateline_stays() -> None:
    cleaned = clean(doc("(AGENCY) " + ARTICLE[0], *ARTICLE[1:]), BUILTIN)
    assert cleaned.paragraphs == ARTICLE
    assert [(r.rule, r.position) for r in cleaned.removals] == [("lead-credit", "inline")]
    dateline = "RIDGEFORD, Mont. (AP) — " + ARTICLE[0]
    assert clean(doc(dateline, *ARTICLE[1:]), BUILTIN).paragraphs[0] == dateline
    # only the opening paragraphs: a tag opening a later paragraph is the article's
    later = "(UN) observers arrived on Monday, officials said."
    assert clean(doc(*ARTICLE, later, ARTICLE[0]), BUILTIN).paragraphs[3] == later


def test_related_link_between_paragraphs_goes_and_a_short_article_paragraph_stays() -> None:
    short = "Relief was felt all along the coast."
    cleaned = clean(doc(ARTICLE[0], "Also Read | Ferry fares to rise in July", short, *ARTICLE[1:], short), BUILTIN)
    assert cleaned.paragraphs == [ARTICLE[0], short, *ARTICLE[1:], short]
    assert [r.rule for r in cleaned.removals] == ["also-read"]


def test_line_shapes_claim_only_at_the_very_edge() -> None:
    """A short non-sentence line goes at the end, not behind an unclaimed paragraph, not mid-text."""
    related = "Ferry timetable changes from Monday as new terminal opens"
    tail = "The council will vote again in June."
    assert clean(doc(*ARTICLE, related), BUILTIN).paragraphs == ARTICLE
    assert clean(doc(*ARTICLE, related, tail), BUILTIN).paragraphs == [*ARTICLE, related, tail]
    assert clean(doc(ARTICLE[0], related, *ARTICLE[1:]), BUILTIN).paragraphs == [ARTICLE[0], related, *ARTICLE[1:]]
    # at the start a headline stays, the lines of widgets around it go
    headline = "Council approves road budget after long debate"
    cleaned = clean(doc("Toggle Tabs", headline, "52 minutes ago", *ARTICLE), BUILTIN)
    assert cleaned.paragraphs == [headline, *ARTICLE]


def test_a_list_closing_the_article_stays() -> None:
    """Short lines after a colon, or more than MAX_SHAPE_RUN of them, are the article's list."""
    items = ["Harbour to Eastpoint", "Harbour to Northbay via the islands", "Westpoint night service"]
    cleaned = clean(doc(*ARTICLE, "The routes affected are:", *items, "Share this article"), BUILTIN)
    assert cleaned.paragraphs == [*ARTICLE, "The routes affected are:", *items]
    many = [f"Route {n} to the outer islands" for n in range(MAX_SHAPE_RUN + 1)]
    assert clean(doc(*ARTICLE, *many), BUILTIN).paragraphs == [*ARTICLE, *many]
    code = ["x = compute(items)", "print(x)  # => 42"]
    assert clean(doc(*ARTICLE, *code), BUILTIN).paragraphs == [*ARTICLE, *code]


def test_cleaning_a_pathological_100_kb_text_is_fast() -> None:
    """Rules are bounded (max_chars, no nested repeats): 100 KB of worst cases in well under a second."""
    texts = [
        "ABCD EFGH " * 10_000,  # capitals: name and initial patterns
        "Jane Doe and John Smith, " * 4_000,  # names and roles: credit patterns
        "\n\n".join(["Photo by Jane Doe, Agency (AB) —"] * 3_000),  # many short credit-like lines
        "\n\n".join(["(AB) The council said. (CD) (EF/GH) Photo: X"] * 2_000),
        ". " * 50_000,
    ]
    for text in texts:
        started = time.perf_counter()
        clean(Document(title="t", text=text), BUILTIN)
        assert time.perf_counter() - started < 0.8, text[:30]


# ---------------------------------------------------------------- the seed


def seed_document() -> Document:
    """The real syndicated seed story as the demo's axadle feed carries it."""
    path = ROOT / "fixtures" / "feeds" / "demo" / "axadle.xml"
    feed = parse(FetchResult(url=str(path), final_url=str(path), status=200, body=path.read_bytes(),
                             content_type="application/rss+xml"))
    (entry,) = feed.entries
    return extract(entry, None, ExtractConfig())


def test_seed_disclaimer_and_cookie_removed_by_builtin_rules_alone() -> None:
    raw = seed_document()
    assert "Has not been edited by Axadle Staff" in raw.text and "uses cookies" in raw.text
    cleaned = clean(raw, ruleset(True))
    assert "Post Disclaimer" not in cleaned.text
    assert "has not been edited" not in cleaned.text.lower()
    assert "we make no representations" not in cleaned.text
    assert "cookies" not in cleaned.text
    assert cleaned.paragraphs[0].startswith(SEED_FIRST)
    assert cleaned.paragraphs[-1].startswith(SEED_LAST)
    assert {r.rule for r in cleaned.removals} == {"disclaimer-heading", "not-edited-auto-generated", "cookie-consent"}
    assert len(cleaned.paragraphs) == len(raw.paragraphs) - 3


# ---------------------------------------------------------------- config: builtin_rules, strip


def test_builtin_rules_false_turns_builtins_off(tmp_path: Path) -> None:
    config = from_dict({"extract": {"builtin_rules": False}, "sources": [{"name": "s", "url": "feed.xml"}]},
                       tmp_path / "ingest.toml")
    assert config.extract.builtin_rules is False
    raw = seed_document()
    cleaned = clean(raw, ruleset(config.extract.builtin_rules, config.sources[0].strip))
    assert cleaned.text == raw.text and cleaned.removals == ()
    assert clean(raw, ruleset(ExtractConfig().builtin_rules)).removals != ()


def test_per_source_strip_adds_to_the_builtins(tmp_path: Path) -> None:
    config = from_dict(
        {"sources": [{"name": "s", "url": "feed.xml", "strip": [r"\s*\[Wire id: \d+\]", r"^Listen to this story\.$"]}]},
        tmp_path / "ingest.toml",
    )
    rules = ruleset(config.extract.builtin_rules, config.sources[0].strip)
    cleaned = clean(doc("Listen to this story.", ARTICLE[0] + " [Wire id: 4411]", *ARTICLE[1:], "Share this article"),
                    rules)
    assert cleaned.paragraphs == ARTICLE
    assert [(r.rule, r.text.strip()) for r in cleaned.removals] == [
        (r"source:^Listen to this story\.$", "Listen to this story."),
        (r"source:\s*\[Wire id: \d+\]", "[Wire id: 4411]"),
        ("share-prompt", "Share this article"),
    ]
    # the source's patterns alone, with the built-ins off
    alone = clean(doc(ARTICLE[0] + " [Wire id: 4411]", "Share this article"), ruleset(False, config.sources[0].strip))
    assert alone.paragraphs == [ARTICLE[0], "Share this article"]


def test_strip_pattern_is_validated_by_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid regular expression"):
        from_dict({"sources": [{"name": "s", "url": "feed.xml", "strip": ["(unclosed"]}]}, tmp_path / "x.toml")


# ---------------------------------------------------------------- learned paragraphs


def test_learned_paragraph_removed_wherever_it_stands() -> None:
    footer = "Harbour Times is owned by its readers. Become a member from $5 a month and support local news."
    learned = frozenset({paragraph_fingerprint(footer.upper())})  # the fingerprint ignores case and punctuation
    cleaned = clean(doc(ARTICLE[0], footer, *ARTICLE[1:]), ruleset(False), learned)
    assert cleaned.paragraphs == ARTICLE
    assert [(r.rule, r.position, r.text) for r in cleaned.removals] == [("learned", "whole", footer)]


def test_paragraph_key_normalises_case_space_and_punctuation() -> None:
    assert paragraph_fingerprint("Share  this, ARTICLE!") == paragraph_fingerprint("share this article")
    assert paragraph_fingerprint("share this article") != paragraph_fingerprint("share that article")


# ---------------------------------------------------------------- the labelled set (fixtures/clean)

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fixture_case(case) -> None:
    """Each labelled case: no article sentence lost, no labelled boilerplate left."""
    outcome = run_case(case)
    assert outcome.missing == (), f"article sentences lost: {outcome.missing}"
    assert outcome.left == (), f"boilerplate left: {outcome.left}"


def test_fixture_set_meets_the_thresholds() -> None:
    """The issue's bar over the whole set: boilerplate removed >= 95%, sentences kept >= 99%."""
    assert len(CASES) >= 40
    assert {c.kind for c in CASES} == {"page", "entry"}
    result = score([run_case(c) for c in CASES])
    assert result["removed_pct"] >= 95.0, result
    assert result["kept_pct"] >= 99.0, result


def test_fixture_labels_are_checked_against_the_input() -> None:
    """A keep or remove label that is not in the input at all would score for free."""
    import html

    from tests.clean_cases import normalize

    for case in CASES:
        inline_gone = re.sub(r"</?(?:a|span|strong|em|b|i|time|abbr)\b[^>]*>", "", case.html)
        plain = normalize(html.unescape(re.sub(r"<[^>]+>", " ", inline_gone)))
        absent = [s for s in case.keep + case.remove if normalize(s) not in plain]
        assert not absent, f"{case.id}: labels not in the input: {absent}"


def test_rule_names_in_removals_exist() -> None:
    names = {r.name for r in RULES}
    for case in CASES[:10]:
        for removal in run_case(case).document.removals:
            assert removal.rule in names or re.match(r"^(learned|source:)", removal.rule)


def test_strip_learned_removes_learned_paragraphs_from_stored_text() -> None:
    from ingest.clean import strip_learned

    footer = "Become a member from $5 a month and support local news."
    text = "\n\n".join([ARTICLE[0], footer, ARTICLE[1]])
    cleaned, removed = strip_learned(text, frozenset({paragraph_fingerprint(footer)}))
    assert cleaned == "\n\n".join(ARTICLE[:2])
    assert [(r.rule, r.position, r.text) for r in removed] == [("learned", "whole", footer)]
    assert strip_learned(text, frozenset({paragraph_fingerprint("something else")})) == (text, ())
    assert strip_learned(footer, frozenset({paragraph_fingerprint(footer)})) == (footer, ())  # never down to nothing


# ---------------------------------------------------------------- real copies (../shared/realcopies)

needs_real_copies = pytest.mark.skipif(
    not realdata.available(), reason=f"real copies not found at {realdata.directory()} (third-party data, not in the repo)"
)


@needs_real_copies
def test_real_copies_check_split_keeps_the_article() -> None:
    """Real articles, real disclaimers, the real stages: >= 99% of article sentences and paragraphs kept."""
    figures = realdata.measure(realdata.SHARED, "check")
    assert figures["sentences_total"] > 1000 and figures["paragraphs_total"] > 500
    assert figures["sentence_keep_rate"] >= 0.99, figures
    assert figures["paragraph_keep_rate"] >= 0.99, figures


@needs_real_copies
def test_real_copies_tune_split_with_sites_left_out_keeps_the_article() -> None:
    """The keep bar on tune as a whole and on every fold of its sites, run with the rules that fold did not teach."""
    figures = realdata.measure(realdata.SHARED, "tune")
    assert figures["paragraph_keep_rate"] >= 0.99 and figures["sentence_keep_rate"] >= 0.99, figures
    left_out = realdata.measure_left_out(realdata.SHARED, "tune", terms=False)
    for fold in [left_out["pooled"], *left_out["folds"]]:
        assert fold["paragraphs_total"] > 100, fold
        assert fold["paragraph_keep_rate"] >= 0.99 and fold["sentence_keep_rate"] >= 0.99, fold


@needs_real_copies
def test_real_copies_tune_split_removes_the_disclaimers_with_sites_left_out() -> None:
    """Removal on tune, and on its sites each left out of what the rules learned (a guard, not the bar: check is)."""
    assert realdata.measure(realdata.SHARED, "tune")["removal_rate"] >= 0.95
    left_out = realdata.measure_left_out(realdata.SHARED, "tune", terms=False)["pooled"]
    assert left_out["disclaimers_total"] > 250 and left_out["removal_rate"] >= 0.95, left_out


@needs_real_copies
@pytest.mark.xfail(strict=True, reason="not met yet: the check split removes 91.7% of real disclaimers (299/326), "
                   "not 95% (tune: 97.5%, tune with sites left out: 96.9% by rules, 83.1% by rules and terms); "
                   "what is missed and why is in docs/cleaning.md")
def test_real_copies_check_split_removes_the_disclaimers() -> None:
    """The issue's bar on the check split: >= 95% of real disclaimers removed."""
    figures = realdata.measure(realdata.SHARED, "check")
    assert figures["disclaimers_total"] > 250
    assert figures["removal_rate"] >= 0.95, figures
