"""The web view's records pages: the auditor's drill-down from a batch to one reading and its
proof, checked in front of the viewer.

- ``/ui/batches/{gateway_id}/{seq}``: the batch header as anchored, where it is anchored, the
  portal's verification state, and its readings (paged) with their quality flags in words.
- ``/ui/records/{gateway_id}/{seq}``: one reading, its quality flags bit by bit, and its proof
  recomputed step by step (``_proof_steps.check_steps``): leaf, Merkle path, anchored header,
  batch signature, record signature; a link to the ``mrv-proof/v1`` bundle and the command that
  checks it offline against the ledger.

Data comes from the API's route functions (the same access rule and access log); only the
batch's stored leaves (for the Merkle proof) are read here, after ``one_record`` allowed the
viewer that record's enterprise."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from mrv_core import hj212_flag
from portal import _i18n
from portal._api_common import GATEWAY_ID_RE, I64, Access
from portal._errors import ApiProblem
from portal._ingest_tables import records
from portal._proof_steps import Flag, ProofCase, Step, check_steps, quality_flags, verified
from portal._proofs import (
    KIND_NAMES,
    BatchProofs,
    StoredRecordError,
    header_of,
    record_from_row,
    unhex,
)
from portal._routes_data import BatchOut, one_batch, one_enterprise
from portal._routes_records import RecordOut, _encode_cursor, list_records, one_record
from portal._ui import render, ui_access

router = APIRouter(prefix="/ui")

#: readings a batch page shows at once (``?limit=`` up to MAX_READINGS_PER_PAGE)
READINGS_PER_PAGE = 50
MAX_READINGS_PER_PAGE = 500

GatewayP = Annotated[str, Path(pattern=GATEWAY_ID_RE)]
SeqP = Annotated[int, Path(ge=1, le=I64)]

_FLAG_WORDS: dict[str, tuple[str, str]] = {
    "COMM_FAULT": ("communication fault: no answer from the device (no value)",
                   "通信故障：设备无应答（无数值）"),
    "STOPPED": ("process stopped", "工艺停运"),
    "MAINTENANCE": ("maintenance", "维护"),
    "MANUAL": ("manually entered value", "手工录入数据"),
    "DEVICE_FAULT": ("device fault or Modbus exception", "设备故障或 Modbus 异常应答"),
    "CALIBRATION": ("calibration", "校准"),
    "DEVICE_OVER_RANGE": ("the device reports over range", "设备报告超量程"),
    "RANGE": ("outside the configured physical range", "超出设定的物理量程"),
    "RATE_OF_CHANGE": ("changed faster than allowed", "变化速率超限"),
    "SPIKE": ("spike: far from its neighbours", "尖峰：明显偏离前后数据"),
    "FLATLINE": ("flatline: the value stopped changing", "恒值：数值长时间不变"),
    "SENTINEL": ("sentinel: the register holds a \u201cnot implemented\u201d marker",
                 "哨兵值：寄存器为\u201c未实现\u201d标记"),
    "TS_DUPLICATE": ("duplicate timestamp", "时间戳重复"),
    "TS_NON_MONOTONIC": ("timestamp went backwards", "时间戳倒退"),
    "TS_FUTURE": ("timestamp in the future", "时间戳超前"),
    "TS_STALE": ("timestamp too old", "时间戳过旧"),
    "DUPLICATE": ("duplicate reading", "重复读数"),
    "COUNTER_ROLLOVER": ("counter wrapped around (the difference was corrected)",
                         "计数器回绕（差值已修正）"),
    "COUNTER_RESET": ("counter reset", "计数器复位"),
    "COUNTER_GLITCH": ("counter glitch", "计数器跳变"),
    "INSUFFICIENT": ("not enough valid data for the aggregate", "有效数据不足，无法汇总"),
    "SUBSTITUTED": ("substitute value, not a measurement", "替代数据，非实测值"),
}

_i18n.register({f"records.flag.{k}": v for k, v in _FLAG_WORDS.items()})
_i18n.register({
    "records.batch.title": ("Batch", "批次"),
    "records.batch.heading": ("Batch {seq} of gateway {gateway}", "网关 {gateway} 的第 {seq} 批次"),
    "records.batch.header": ("The batch header", "批次头"),
    "records.batch.gateway": ("Gateway", "网关"),
    "records.batch.enterprise": ("Enterprise", "企业"),
    "records.batch.seq": ("Batch number", "批次序号"),
    "records.batch.count": ("Records", "记录数"),
    "records.batch.range": ("Record range", "记录序号范围"),
    "records.batch.range_value": ("{first} to {last}", "{first} 至 {last}"),
    "records.batch.time": ("Time range", "时间范围"),
    "records.batch.scope1": ("Scope 1 CO₂e", "范围一 CO₂e"),
    "records.batch.scope2": ("Scope 2 CO₂e", "范围二 CO₂e"),
    "records.batch.scope3": ("Scope 3 CO₂e", "范围三 CO₂e"),
    "records.batch.root": ("Merkle root", "默克尔根"),
    "records.batch.header_hash": ("Header hash", "批次头哈希"),
    "records.batch.prev_hash": ("Previous header hash", "上一批次头哈希"),
    "records.batch.prev_link": ("batch {seq}", "第 {seq} 批次"),
    "records.batch.first": ("none: the gateway's first batch", "无：网关的第一个批次"),
    "records.batch.signature": ("Signature (Ed25519)", "签名（Ed25519）"),
    "records.batch.anchor": ("Anchored on the ledger", "账本锚定"),
    "records.batch.block": ("Block", "区块"),
    "records.batch.tx": ("Transaction", "交易"),
    "records.batch.period": ("Compliance period", "履约期"),
    "records.batch.state": ("Verification in the portal", "平台核验状态"),
    "records.state.verified": ("Verified: every record's leaf reaches the anchored root and "
                               "the signature holds",
                               "已核验：每条记录的叶子均可推导出锚定的根，签名有效"),
    "records.state.unanchored": ("Pending: delivered and signed, waiting for its anchor on the "
                                 "ledger", "待定：已送达且签名有效，等待账本锚定"),
    "records.state.not-delivered": ("Pending: anchored, but the gateway has not delivered its "
                                    "records to the portal yet",
                                    "待定：已锚定，但网关尚未向平台提交记录"),
    "records.state.quarantined": ("Quarantined: {reason}", "已隔离：{reason}"),
    "records.state.received": ("Received {when}", "接收于 {when}"),
    "records.state.verified_at": ("verified {when}", "核验于 {when}"),
    "records.readings": ("Readings", "读数"),
    "records.readings.caption": ("Records {first} to {last} ({shown} of the batch's {count})",
                                 "第 {first} 至 {last} 条记录（本批次共 {count} 条，此处显示 {shown} 条）"),
    "records.readings.none": ("The portal holds no records of this batch: only verified batches' "
                              "records are kept.",
                              "平台未保存此批次的记录：仅保存已核验批次的记录。"),
    "records.readings.next": ("Next readings", "下一页"),
    "records.readings.first_page": ("First readings", "第一页"),
    "records.col.seq": ("Record", "记录序号"),
    "records.col.point": ("Point", "监测点"),
    "records.col.time": ("Time", "时间"),
    "records.col.value": ("Value", "数值"),
    "records.col.quality": ("Quality", "数据质量"),
    "records.col.proof": ("Proof", "证明"),
    "records.col.open": ("check reading {seq}", "核查读数 {seq}"),
    "records.quality.good": ("good", "正常"),
    "records.no_value": ("no value", "无数值"),
    "records.reading.title": ("Reading", "读数"),
    "records.reading.heading": ("Reading {seq} of gateway {gateway}", "网关 {gateway} 的第 {seq} 条读数"),
    "records.reading.kind.reading": ("measured reading", "实测读数"),
    "records.reading.kind.derived": ("derived record", "派生记录"),
    "records.reading.kind.audit": ("audit record", "审计记录"),
    "records.reading.fields": ("The record as stored", "平台保存的记录"),
    "records.reading.kind": ("Kind", "类型"),
    "records.reading.batch": ("Batch", "批次"),
    "records.reading.value_bits": ("Value bits (IEEE-754)", "数值位（IEEE-754）"),
    "records.reading.exact": ("Exact value", "精确数值"),
    "records.reading.quality_bits": ("Quality bits", "质量位"),
    "records.reading.source": ("Source", "数据来源"),
    "records.reading.leaf": ("Stored leaf", "保存的叶子哈希"),
    "records.reading.record_signature": ("Record signature", "记录签名"),
    "records.reading.extra": ("Details", "详情"),
    "records.flags": ("Quality flags", "数据质量标志"),
    "records.flags.none": ("No flag is set: a good reading (HJ 212 flag N).",
                           "未设置任何标志：正常读数（HJ 212 标记 N）。"),
    "records.flags.hj212": ("HJ 212 flag of the reading: {flag}", "读数的 HJ 212 标记：{flag}"),
    "records.flags.no_letter": ("HJ 212 has no letter for the gateway's own checks; the full "
                                "bitmask travels with the record.",
                                "HJ 212 没有对应网关自有检查的标记字母；完整的质量位随记录一同保存。"),
    "records.reading.category": ("Category", "类别"),
    "records.reading.subject": ("Subject", "对象"),
    "records.reading.payload": ("Payload", "内容"),
    "records.flags.bit": ("Bit", "位"),
    "records.flags.name": ("Flag", "标志"),
    "records.flags.meaning": ("Meaning", "含义"),
    "records.flags.hj": ("HJ 212", "HJ 212"),
    "records.flags.effect": ("Effect", "影响"),
    "records.flags.invalid": ("invalid: left out of aggregates and emissions",
                              "无效：不计入汇总与排放"),
    "records.flags.info": ("informational: the value stays valid", "提示性：数值仍有效"),
    "records.flag.RESERVED": ("reserved bit: no flag is defined for it",
                              "保留位：未定义标志"),
    "records.verdict.ok": ("Verified: every step of the proof holds for this reading.",
                           "已验证：该读数的每一步证明均成立。"),
    "records.verdict.bad": ("NOT verified: {steps} failed.", "未通过验证：{steps} 未通过。"),
    "records.verdict.unreached": ("Not reached because of that: {steps}.",
                                  "因此未达成：{steps}。"),
    "records.verdict.rely": ("Do not rely on this reading.", "请勿采信该读数。"),
    "records.proof": ("The proof, checked now", "证明（现场核验）"),
    "records.proof.intro": ("The portal recomputes every step from the stored record, the "
                            "batch's stored leaves and the ledger as it indexed it. Each step "
                            "says what was compared.",
                            "平台根据保存的记录、批次保存的叶子以及已索引的账本重新计算每一步，"
                            "并列出每一步比较的内容。"),
    "records.step.leaf": ("Leaf: the record's fields give the stored leaf",
                          "叶子：记录字段计算出保存的叶子哈希"),
    "records.step.leaf.how": ("keccak256(keccak256(abi.encode(kind, gatewayId, seq, …))) of the "
                              "fields above (docs/formats.md, Records) must equal the leaf stored "
                              "with the record.",
                              "对上述字段计算 keccak256(keccak256(abi.encode(kind, gatewayId, seq, …)))"
                              "（docs/formats.md“Records”），结果须等于随记录保存的叶子哈希。"),
    "records.step.merkle": ("Merkle path: the leaf reaches the batch's root",
                            "默克尔路径：叶子推导出批次的根"),
    "records.step.merkle.how": ("The recomputed leaf is hashed with each sibling in turn, the "
                                "smaller first (keccak256(min ‖ max), docs/formats.md, Merkle "
                                "tree); the result must be the batch's Merkle root.",
                                "将重新计算的叶子依次与各兄弟节点哈希（小者在前，keccak256(min ‖ max)，"
                                "docs/formats.md“Merkle tree”），结果须等于批次的默克尔根。"),
    "records.step.anchor": ("Anchored header: the batch is on the ledger",
                            "锚定的批次头：批次已上链"),
    "records.step.anchor.how": ("The header rebuilt from the batch's fields (docs/formats.md, "
                                "Batch header) must hash to the header hash the ledger holds, "
                                "and its root must be the root the ledger holds.",
                                "由批次字段重建的批次头（docs/formats.md“Batch header”）的哈希须等于"
                                "账本保存的批次头哈希，其中的根须等于账本保存的根。"),
    "records.step.signature": ("Signature: the gateway signed this batch",
                               "签名：网关签署了该批次"),
    "records.step.signature.how": ("The Ed25519 signature over the header hash must verify with "
                                   "the gateway's key registered on the ledger.",
                                   "对批次头哈希的 Ed25519 签名须能用账本登记的网关公钥验证。"),
    "records.step.record-signature": ("Record signature: the gateway signed this record",
                                      "记录签名：网关签署了该记录"),
    "records.step.record-signature.how": ("The record's own Ed25519 signature over RECORD_SIG_TAG "
                                          "‖ leaf (docs/formats.md, Record signatures) must "
                                          "verify with the same key.",
                                          "记录自身对 RECORD_SIG_TAG ‖ 叶子 的 Ed25519 签名"
                                          "（docs/formats.md“Record signatures”）须能用同一公钥验证。"),
    "records.state_word.passed": ("✓ passed", "✓ 通过"),
    "records.state_word.failed": ("✗ failed", "✗ 未通过"),
    "records.state_word.not-reached": ("✗ not reached: an earlier step failed",
                                       "✗ 未达成：前序步骤未通过"),
    "records.state_word.not-applicable": ("— not applicable: the gateway signs batches only",
                                          "— 不适用：网关仅签署批次"),
    "records.cmp.what": ("Compared", "比较项"),
    "records.cmp.computed": ("Recomputed here", "本页重新计算"),
    "records.cmp.expected": ("Must equal", "应当等于"),
    "records.cmp.same": ("Equal", "是否相等"),
    "records.cmp.yes": ("yes", "是"),
    "records.cmp.no": ("no", "否"),
    "records.cmp.leaf": ("leaf (recomputed ↔ stored)", "叶子（重新计算 ↔ 保存值）"),
    "records.cmp.root": ("root (path's end ↔ batch's root)", "根（路径终点 ↔ 批次的根）"),
    "records.cmp.range": ("record in the batch's range", "记录属于批次范围"),
    "records.cmp.header_hash": ("header hash (rebuilt ↔ on the ledger)",
                                "批次头哈希（重建 ↔ 账本）"),
    "records.cmp.anchored_root": ("root (in the header ↔ on the ledger)",
                                  "根（批次头中 ↔ 账本）"),
    "records.cmp.ed25519": ("Ed25519 verification", "Ed25519 验证"),
    "records.cmp.valid": ("valid", "有效"),
    "records.cmp.invalid": ("invalid", "无效"),
    "records.fact.message": ("Signed message", "被签名的消息"),
    "records.fact.signature": ("Signature", "签名"),
    "records.fact.signing_key": ("Gateway key on the ledger", "账本登记的网关公钥"),
    "records.fact.leaf_index": ("Leaf position in the batch", "叶子在批次中的位置"),
    "records.fact.proof_length": ("Sibling hashes", "兄弟节点数"),
    "records.trail": ("The path, level by level", "逐层路径"),
    "records.trail.level": ("Level", "层"),
    "records.trail.sibling": ("Sibling", "兄弟节点"),
    "records.trail.result": ("Hash after pairing", "配对后的哈希"),
    "records.anchored_in": ("Anchored in block {block}, transaction", "锚定于区块 {block}，交易"),
    "records.short.leaf": ("step 1 (leaf)", "第 1 步（叶子）"),
    "records.short.merkle": ("step 2 (Merkle path)", "第 2 步（默克尔路径）"),
    "records.short.anchor": ("step 3 (anchored header)", "第 3 步（锚定的批次头）"),
    "records.short.signature": ("step 4 (signature)", "第 4 步（签名）"),
    "records.short.record-signature": ("step 5 (record signature)", "第 5 步（记录签名）"),
    "records.blocked": ("Not reached: it rests on {steps}, which did not hold.",
                        "未达成：本步依赖的{steps}未成立。"),
    "records.why": ("What the check found", "核验器说明（英文）"),
    "records.offline": ("Check it yourself", "自行核验"),
    "records.offline.download": ("Download the proof bundle", "下载证明文件"),
    "records.offline.help": ("The bundle (mrv-proof/v1) holds the record, its batch header and "
                             "signature and the Merkle proof. Check it offline against a node of "
                             "the ledger you trust:",
                             "证明文件（mrv-proof/v1）包含记录、批次头、签名及默克尔证明。"
                             "可使用您信任的账本节点离线核验："),
    "records.no_bundle": ("The portal gives no proof bundle for this record: its stored data "
                          "does not match what is anchored (steps 1 and 2 above say how).",
                          "平台无法提供该记录的证明文件：其保存的数据与锚定内容不符（见上方第 1、2 步）。"),
})


@dataclass(frozen=True)
class ReadingRow:
    """A reading as a batch page's table shows it."""

    rec: RecordOut
    flags: list[Flag]


_KIND_IDS = {v: k for k, v in KIND_NAMES.items()}


def _stored_leaves(acc: Access, gateway_id: str, batch_seq: int) -> tuple[list[int], list[bytes]]:
    seqs, leaves = [], []
    with acc.ctx.engine.connect() as c:
        for s, leaf in c.execute(sa.select(records.c.seq, records.c.leaf).where(
                records.c.gateway_id == gateway_id, records.c.batch_seq == batch_seq)
                .order_by(records.c.seq)):
            seqs.append(int(s))
            leaves.append(unhex(leaf))
    return seqs, leaves


def _enterprise_and_key(acc: Access, b: BatchOut) -> tuple[str | None, bytes | None]:
    """The batch's enterprise's name in the register and the gateway's Ed25519 key as the
    ledger registered it (``gateways.signing_key`` of the batch's gateway key); None for what
    the index does not hold."""
    try:
        ent = one_enterprise(b.enterprise, acc)
    except ApiProblem:
        return None, None
    for g in ent.gateways or []:
        if g.gateway_key == b.gateway_key:
            return ent.name, unhex(g.signing_key)
    return ent.name, None


def proof_case(rec: RecordOut, b: BatchOut, signing_key: bytes | None, seqs: list[int],
               leaves: list[bytes]) -> ProofCase:
    """What the reading page checks: the record rebuilt from its stored fields, the proof from
    the batch's stored leaves, the batch's fields and what the ledger holds (the index)."""
    header = header_of(b)
    row = SimpleNamespace(
        gateway_id=rec.gateway_id, seq=rec.seq, kind=_KIND_IDS[rec.kind], point_id=rec.point_id,
        ts_ns=rec.ts_ns, value_bits=int(rec.value_bits, 16), unit=rec.unit, quality=rec.quality,
        source=rec.source, extra=rec.extra)
    record, record_error = None, ""
    try:
        record = record_from_row(row)
    except StoredRecordError as e:
        record_error = str(e)
    proof, proof_error = None, ""
    want = list(range(header.first_record_seq, header.last_record_seq + 1))
    if seqs != want:
        proof_error = (f"the portal holds {len(seqs)} of the batch's {len(want)} records "
                       f"({header.first_record_seq}..{header.last_record_seq})")
    else:
        proof = BatchProofs(leaves).proof(rec.seq - header.first_record_seq)
    return ProofCase(record=record, stored_leaf=unhex(rec.leaf), proof=proof, header=header,
                     anchored_header_hash=unhex(b.header_hash), anchored_root=unhex(b.root),
                     signature=unhex(b.signature), signing_key=signing_key,
                     record_signature=unhex(rec.record_signature) if rec.record_signature
                     else None, record_error=record_error, proof_error=proof_error, seq=rec.seq)


def _q(s: str) -> str:
    """A path segment (a gateway id may hold any printable character)."""
    return quote(s, safe="")


@router.get("/batches/{gateway_id}/{seq}", response_class=HTMLResponse)
def batch_page(gateway_id: GatewayP, seq: SeqP, request: Request,
               acc: Annotated[Access, Depends(ui_access)],
               limit: Annotated[int, Query(ge=1, le=MAX_READINGS_PER_PAGE)] = READINGS_PER_PAGE,
               after: Annotated[int | None, Query(ge=0, le=I64)] = None) -> HTMLResponse:
    b = one_batch(gateway_id, seq, acc)
    rows: list[ReadingRow] = []
    next_after: int | None = None
    start = b.first_record_seq - 1 if after is None else max(after, b.first_record_seq - 1)
    if start < b.last_record_seq:
        page = list_records(acc, limit=min(limit, acc.ctx.config.api.max_page),
                            cursor=_encode_cursor(gateway_id, start), enterprise=None,
                            gateway_id=gateway_id, point_id=None, from_ns=None, to_ns=None)
        items = [r for r in page.items
                 if r.gateway_id == gateway_id and r.seq <= b.last_record_seq]
        rows = [ReadingRow(r, quality_flags(r.quality)) for r in items]
        if page.next_cursor is not None and items and items[-1].seq < b.last_record_seq \
                and len(items) == len(page.items):
            next_after = items[-1].seq
    return render(request, "records/batch.html", viewer=acc.viewer, title="records.batch.title",
                  b=b, enterprise_name=_enterprise_and_key(acc, b)[0], rows=rows,
                  next_after=next_after, paged=after is not None, limit=limit, q=_q)


@router.get("/records/{gateway_id}/{seq}", response_class=HTMLResponse)
def reading_page(gateway_id: GatewayP, seq: SeqP, request: Request,
                 acc: Annotated[Access, Depends(ui_access)]) -> HTMLResponse:
    rec = one_record(gateway_id, seq, acc)
    b = one_batch(gateway_id, rec.batch_seq, acc)
    seqs, leaves = _stored_leaves(acc, gateway_id, rec.batch_seq)
    name, key = _enterprise_and_key(acc, b)
    steps: list[Step] = check_steps(proof_case(rec, b, key, seqs, leaves))
    failed = [s for s in steps if not s.passed]
    return render(request, "records/reading.html", viewer=acc.viewer,
                  title="records.reading.title", rec=rec, b=b,
                  enterprise_name=name,
                  flags=quality_flags(rec.quality), hj212=hj212_flag(rec.quality), steps=steps,
                  ok=verified(steps), failed=[s for s in failed if s.state == "failed"],
                  unreached=[s for s in failed if s.state == "not-reached"],
                  has_bundle=all(s.passed for s in steps if s.name in ("leaf", "merkle")),
                  bundle_url=f"/v1/records/{_q(gateway_id)}/{seq}/proof", q=_q)
