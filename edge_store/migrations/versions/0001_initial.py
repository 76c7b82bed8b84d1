"""Initial edge store schema: catalog, movements with their seq counter, stock, cursors, alerts,
device status.

Revision ID: 0001
Revises:
Create Date: 2026-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("gtin", sa.String(14), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("unit_weight_g", sa.Float(), nullable=True),
        sa.Column("pack_size", sa.Integer(), nullable=False),
        sa.Column("reorder_point", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_items")),
        sa.UniqueConstraint("gtin", name=op.f("uq_items_gtin")),
        sa.CheckConstraint("pack_size >= 1", name=op.f("ck_items_pack_size_positive")),
    )
    op.create_table(
        "locations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
    )
    op.create_table(
        "stock_levels",
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("on_hand", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("location", "sku", name=op.f("pk_stock_levels")),
        sa.ForeignKeyConstraint(
            ["location"], ["locations.id"], name=op.f("fk_stock_levels_location_locations")
        ),
        sa.ForeignKeyConstraint(["sku"], ["items.sku"], name=op.f("fk_stock_levels_sku_items")),
    )
    op.create_table(
        "movements",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=False,
        ),
        sa.Column("movement_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("from_location", sa.String(64), nullable=False),
        sa.Column("to_location", sa.String(64), nullable=False),
        sa.Column("source_type", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(255), nullable=False),
        sa.Column("observed_at", _utc(), nullable=False),
        sa.Column("recorded_at", _utc(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("container", sa.String(255), nullable=True),
        sa.Column("epcs", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_movements")),
        sa.UniqueConstraint("movement_id", name=op.f("uq_movements_movement_id")),
        sa.ForeignKeyConstraint(["sku"], ["items.sku"], name=op.f("fk_movements_sku_items")),
        sa.ForeignKeyConstraint(
            ["from_location"],
            ["locations.id"],
            name=op.f("fk_movements_from_location_locations"),
        ),
        sa.ForeignKeyConstraint(
            ["to_location"], ["locations.id"], name=op.f("fk_movements_to_location_locations")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_movements_quantity_positive")),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_movements_confidence_range")
        ),
        sa.CheckConstraint(
            "from_location <> to_location", name=op.f("ck_movements_distinct_locations")
        ),
    )
    store_state = op.create_table(
        "store_state",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_state")),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_state_single_row")),
        sa.CheckConstraint("last_seq >= 0", name=op.f("ck_store_state_last_seq_non_negative")),
    )
    # The counter row exists from the start, so writers only ever lock and update it.
    op.bulk_insert(store_state, [{"id": 1, "site": None, "last_seq": 0}])
    op.create_table(
        "sink_cursors",
        sa.Column("sink", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_sink_cursors")),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_sink_cursors_seq_non_negative")),
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", _utc(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alerts")),
    )
    op.create_table(
        "device_status",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("device_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", _utc(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_status")),
    )


def downgrade() -> None:
    for table in (
        "device_status",
        "alerts",
        "sink_cursors",
        "store_state",
        "movements",
        "stock_levels",
        "locations",
        "items",
    ):
        op.drop_table(table)
