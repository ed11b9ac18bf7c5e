"""The rule-based order parser and answer matching, in Portuguese and English."""

import pytest

from services.pipeline.orders import Choice, Order, detect_language, match_answer, normalize, parse_order


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "write me a LinkedIn post about our new menu",
            Order("en", platform="linkedin", topic="our new menu"),
        ),
        ("escreve um post curto sobre o cardápio", Order("pt_BR", length="short", topic="cardápio")),
        (
            "Escreva um post sobre o cardápio novo para o Instagram, em tom casual",
            Order("pt_BR", platform="instagram", tone="casual", topic="cardápio novo"),
        ),
        (
            "write a short tweet about coffee beans",
            Order("en", platform="x", length="short", topic="coffee beans"),
        ),
        (
            "Create a long article on remote work in a friendly tone",
            Order("en", platform="blog", length="long", tone="friendly", topic="remote work"),
        ),
        (
            "Por favor, escreve um post longo pro LinkedIn sobre nossa equipe",
            Order("pt_BR", platform="linkedin", length="long", topic="nossa equipe"),
        ),
        (
            "write a post about the new menu for Instagram, short and friendly",
            Order("en", platform="instagram", length="short", tone="friendly", topic="new menu"),
        ),
        (
            "cria uma postagem para o blog sobre nossa história, tom profissional",
            Order("pt_BR", platform="blog", tone="professional", topic="nossa história"),
        ),
        (
            "escreve um post sobre vendas no linkedin, curto e descontraído",
            Order("pt_BR", platform="linkedin", length="short", tone="casual", topic="vendas"),
        ),
        (
            "Faz um post pro insta sobre a promoção de sexta",
            Order("pt_BR", platform="instagram", topic="promoção de sexta"),
        ),
        (
            "Escreve um post no LinkedIn falando de liderança",
            Order("pt_BR", platform="linkedin", topic="liderança"),
        ),
        ("Draft a LinkedIn post on our Q3 results", Order("en", platform="linkedin", topic="our Q3 results")),
        ("make a post on LinkedIn", Order("en", platform="linkedin")),
        ("quero um post", Order("pt_BR")),
        ("Can you please write a post", Order("en")),
    ],
)
def test_orders_are_parsed_for_platform_length_tone_and_topic(text: str, expected: Order) -> None:
    assert parse_order(text) == expected


def test_a_topic_naming_a_platform_word_does_not_set_the_platform() -> None:
    assert parse_order("write a post about X") == Order("en", topic="X")


@pytest.mark.parametrize(
    "text",
    [
        "Our new menu has a vegan feijoada that sold out on Friday",
        "the chef tested twelve desserts",
        "Customers write posts about our food",  # a fact about posts, not a request
        "o post de ontem teve muitas curtidas",
        "",
    ],
)
def test_anything_else_is_a_note(text: str) -> None:
    assert parse_order(text) is None


def test_the_language_given_wins_over_detection() -> None:
    assert parse_order("write a post about sales", "pt_BR").language == "pt_BR"
    assert detect_language("faz um post sobre vendas") == "pt_BR"
    assert detect_language("make a post about sales") == "en"


def test_order_fields_are_only_what_it_says() -> None:
    assert Order("en", platform="x", topic="coffee").fields() == {"platform": "x", "topic": "coffee"}


def test_normalize_folds_case_accents_and_punctuation() -> None:
    assert normalize("  Cardápio,  NOVO! ") == "cardapio novo"


PLATFORMS = [
    Choice("platform:linkedin", "LinkedIn", "linkedin"),
    Choice("platform:instagram", "Instagram", "instagram"),
    Choice("platform:x", "X (Twitter)", "x"),
    Choice("platform:blog", "Blog", "blog"),
]


@pytest.mark.parametrize(
    ("payload", "text", "value"),
    [
        ("platform:x", "X (Twitter)", "x"),  # a tapped button / list row: by its id
        (None, "2", "instagram"),  # a gateway sent the choices as numbered text
        (None, "3.", "x"),
        (None, "Blog", "blog"),  # the title
        (None, "instagran", "instagram"),  # a close spelling
        (None, "Linkdin", "linkedin"),
        (None, "twitter", "x"),  # a word that means the value
        (None, "o blog, por favor", "blog"),
    ],
)
def test_answers_match_by_id_number_title_word_or_spelling(
    payload: str | None, text: str, value: str
) -> None:
    choice = match_answer(PLATFORMS, payload=payload, text=text, field="platform")
    assert choice is not None and choice.value == value


@pytest.mark.parametrize("text", ["banana", "9", "0", "hmm"])
def test_unmatched_answers_match_nothing(text: str) -> None:
    assert match_answer(PLATFORMS, payload=None, text=text, field="platform") is None


def test_an_unknown_payload_falls_back_to_the_title() -> None:
    choice = match_answer(PLATFORMS, payload="stale-id", text="LinkedIn", field="platform")
    assert choice is not None and choice.value == "linkedin"
