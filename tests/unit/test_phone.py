import pytest

from shared.phone import InvalidPhoneNumber, normalize_e164


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+5511999998888", "+5511999998888"),
        ("+55 (11) 99999-8888", "+5511999998888"),
        ("+351 912 345 678", "+351912345678"),
        ("+1 212 555 0123", "+12125550123"),
    ],
)
def test_valid_numbers_are_normalised_to_e164(raw, expected):
    assert normalize_e164(raw) == expected


def test_number_without_country_code_says_how_to_fix_it():
    with pytest.raises(InvalidPhoneNumber, match=r"start with \+ and the country code"):
        normalize_e164("11999998888")


@pytest.mark.parametrize("raw", ["+55119", "+999123456789", "+5511abc", "+"])
def test_invalid_numbers_are_refused(raw):
    with pytest.raises(InvalidPhoneNumber):
        normalize_e164(raw)
