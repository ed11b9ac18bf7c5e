"""The offline agents: a readable post from the notes, fitted to the platform."""

from services.pipeline import writer


def brief(**kw: str) -> writer.Brief:
    base = {
        "platform": "linkedin",
        "tone": "professional",
        "length": "medium",
        "topic": "new menu",
        "angle": "",
        "language": "en",
    }
    return writer.Brief(**(base | kw))


def test_post_is_hook_points_from_notes_and_close() -> None:
    text = writer.write(brief(), ["vegan feijoada sold out", "menu in english too"])
    assert text.startswith("A few thoughts on new menu.")
    assert "• Vegan feijoada sold out." in text and "• Menu in english too." in text
    assert text.endswith("?")


def test_portuguese_and_length_carry_the_points() -> None:
    text = writer.write(brief(language="pt_BR", length="short"), ["primeiro ponto", "segundo ponto"])
    assert "Algumas reflexões" in text and "Primeiro ponto." in text and "Segundo" not in text


def test_editor_fits_each_platform_limit() -> None:
    long = writer.write(brief(length="long"), ["word " * 300] * 6)
    for platform, limit in writer.LIMITS.items():
        title, text = writer.edit(brief(platform=platform), long)
        assert len(text) <= limit and title == "New menu"
    _, insta = writer.edit(brief(platform="instagram"), "hi")
    assert insta.endswith("#NewMenu")


def test_brief_from_profile_and_deterministic() -> None:
    p = {"platforms": ["x", "blog"], "tone": "casual", "topics": ["coffee", "tea"], "language": "en"}
    assert writer.build_brief(p, ["a"], slot_index=1) == writer.build_brief(p, ["a"], slot_index=1)
    assert writer.build_brief(p, [], slot_index=1).platform == "blog"
    assert writer.build_brief({}, ["espresso espresso crema"]).topic.startswith("espresso")
    assert writer.ts_config("pt_BR") == "portuguese" and writer.ts_config("de") == "simple"


def test_ready_notice_in_the_users_language() -> None:
    assert "pronto" in writer.ready_notice("pt_BR", "linkedin", "T", "d1")
    assert "LinkedIn" in writer.ready_notice("en", "linkedin", "T", "d1")
