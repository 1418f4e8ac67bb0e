"""The command lines the benchmarks print to reproduce a run carry no database password."""

from __future__ import annotations

import shlex

from benchmarks.commands import shareable_url


def test_a_reproduce_url_keeps_everything_but_the_password_and_pastes_into_a_shell() -> None:
    url = "postgresql://ops:s3cret@db.internal:5432/reimage?sslmode=require&password=s3cret"
    shown = shareable_url(url)
    assert "s3cret" not in shown
    (word,) = shlex.split(shown)  # one shell word, whatever the URL holds
    assert word.startswith("postgresql+psycopg://ops:")
    assert word.endswith("@db.internal:5432/reimage?sslmode=require")


def test_a_socket_path_and_an_sslpassword_in_the_query_are_handled_too() -> None:
    shown = shareable_url("postgresql+psycopg:///x?host=/run/pg&sslpassword=k3y&user=me")
    assert "k3y" not in shown
    assert shlex.split(shown) == ["postgresql+psycopg:///x?host=%2Frun%2Fpg&user=me"]


def test_a_plain_local_url_is_printed_as_given() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    assert shareable_url(url) == url
