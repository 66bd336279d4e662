from typing import Any
def test_postgres_fixture_answers_sql(postgres: Any) -> None:
    url = postgres.create_database("smoke")
    assert url.endswith("/smoke")
    assert postgres.psql("smoke", "select 40 + 2").strip() == "42"
