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


@pytest.mark.parametrize(
    "raw",
    ["+551187654321", "+55 11 8765-4321", "+55 (11) 98765-4321", "+5511987654321"],
)
def test_brazilian_mobile_with_or_without_the_ninth_digit_is_one_number(raw):
    assert normalize_e164(raw) == "+5511987654321"


def test_brazilian_landline_keeps_eight_digits():
    assert normalize_e164("+551133334444") == "+551133334444"
