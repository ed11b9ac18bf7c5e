import pytest

from shared.crypto import DecryptionError, SecretBox, lookup_hash


def test_round_trip_and_ciphertext_hides_the_value():
    box = SecretBox(SecretBox.generate_key())
    token = box.encrypt("+5511999998888")
    assert "5511999998888" not in token
    assert box.decrypt(token) == "+5511999998888"


def test_key_rotation_old_values_still_decrypt_and_rotate_to_the_new_key():
    old = SecretBox.generate_key()
    new = SecretBox.generate_key()
    token = SecretBox(old).encrypt("secret")
    rotated_box = SecretBox(f"{new},{old}")
    assert rotated_box.decrypt(token) == "secret"
    rotated = rotated_box.rotate(token)
    assert SecretBox(new).decrypt(rotated) == "secret"
    with pytest.raises(DecryptionError):
        SecretBox(new).decrypt(token)


def test_bad_key_configuration_says_what_to_do():
    with pytest.raises(ValueError, match="herald keys generate"):
        SecretBox("not-a-fernet-key")


def test_lookup_hash_is_keyed_and_deterministic():
    assert lookup_hash("k1", "+5511999998888") == lookup_hash("k1", "+5511999998888")
    assert lookup_hash("k1", "+5511999998888") != lookup_hash("k2", "+5511999998888")
