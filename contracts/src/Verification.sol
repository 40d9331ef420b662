// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MrvRegistry} from "./MrvRegistry.sol";
import {RegistryClient} from "./RegistryClient.sol";
import {EmissionsLedger} from "./EmissionsLedger.sol";
import {Allowances} from "./Allowances.sol";

/// @title Verification: auditors' reports and findings; government's decisions on findings.
/// @notice A report sets an enterprise's verified emissions for an open period (a later
/// report supersedes an earlier one until the period closes or a finding is confirmed).
/// A finding ("correct and penalise", two steps): an auditor files it with the corrected
/// emissions, an evidence hash and optionally one disputed record (gateway, batch, leaf and
/// Merkle proof, checked here against the anchored root); government (not the same account)
/// confirms or rejects it. Confirming sets verified emissions to the corrected figure and
/// applies the penalty: (corrected - previous) x rate(kind) / 10000, where previous is the
/// verified figure, or the reported one when nothing was verified yet; no penalty when the
/// correction lowers emissions.
contract Verification is RegistryClient {
    enum FindingKind {
        None,
        Abnormal, // abnormal data (faulty meter, implausible values)
        Falsified // falsified data
    }

    enum FindingStatus {
        None,
        Filed,
        Confirmed,
        Rejected
    }

    struct Report {
        address enterprise;
        uint32 period;
        address auditor;
        uint64 filedAt;
        uint128 verifiedG;
        uint256 reportedG;
        bytes32 reportHash;
        string uri;
    }

    /// @notice What an auditor files. `gatewayKey` zero: no record named (then `batchSeq`,
    /// `recordLeaf` and `proof` must be empty).
    struct FindingInput {
        address enterprise;
        uint32 period;
        FindingKind kind;
        uint128 correctedG;
        bytes32 evidenceHash;
        string evidenceUri;
        bytes32 gatewayKey;
        uint64 batchSeq;
        bytes32 recordLeaf;
        bytes32[] proof;
    }

    struct Finding {
        address enterprise;
        uint32 period;
        FindingKind kind;
        FindingStatus status;
        address auditor;
        uint64 filedAt;
        uint128 correctedG;
        uint128 previousG;
        uint128 penaltyG;
        address decidedBy;
        uint64 decidedAt;
        bytes32 evidenceHash;
        bytes32 gatewayKey;
        uint64 batchSeq;
        bytes32 recordLeaf;
        string evidenceUri;
        string decisionNote;
    }

    uint32 public constant MAX_PENALTY_BPS = 100_000; // 10x

    EmissionsLedger public immutable ledger;
    Allowances public immutable allowances;
    Report[] private _reports;
    Finding[] private _findings;
    mapping(address => mapping(uint32 => uint256)) private _latestReport;
    mapping(address => mapping(uint32 => uint256[])) private _findingsOf;
    mapping(address => mapping(uint32 => bool)) private _corrected;
    mapping(FindingKind => uint32) private _penaltyBps;

    error EmptyReportHash();
    error EmptyEvidenceHash();
    error BadFindingKind(uint8 kind);
    error BadPenaltyRate(uint32 bps);
    error AlreadyCorrected(address enterprise, uint32 period);
    error IncompleteRecordRef();
    error GatewayNotOfEnterprise(bytes32 gatewayKey, address enterprise);
    error UnknownBatch(bytes32 gatewayKey, uint64 batchSeq);
    error BatchOutsidePeriod(bytes32 gatewayKey, uint64 batchSeq, uint32 batchPeriod);
    error InvalidRecordProof(bytes32 gatewayKey, uint64 batchSeq, bytes32 recordLeaf);
    error UnknownReport(uint256 id);
    error UnknownFinding(uint256 id);
    error FindingNotPending(uint256 id, FindingStatus status);
    error SelfReview(address account);

    event ReportFiled(
        uint256 indexed reportId,
        address indexed enterprise,
        uint32 indexed period,
        address auditor,
        uint256 verifiedG,
        uint256 reportedG,
        bytes32 reportHash,
        string uri
    );
    event FindingFiled(
        uint256 indexed findingId,
        address indexed enterprise,
        uint32 indexed period,
        address auditor,
        FindingKind kind,
        uint256 correctedG,
        bytes32 evidenceHash,
        bytes32 gatewayKey,
        uint64 batchSeq,
        bytes32 recordLeaf,
        string evidenceUri
    );
    event FindingConfirmed(
        uint256 indexed findingId,
        address indexed enterprise,
        uint32 indexed period,
        address by,
        uint256 previousG,
        uint256 correctedG,
        uint256 penaltyG
    );
    event FindingRejected(
        uint256 indexed findingId, address indexed enterprise, uint32 indexed period, address by, string reason
    );
    event PenaltyRateSet(FindingKind indexed kind, uint32 bps, address indexed by);

    constructor(MrvRegistry registry_, EmissionsLedger ledger_, Allowances allowances_) RegistryClient(registry_) {
        if (address(ledger_) == address(0) || address(allowances_) == address(0)) revert ZeroAddress();
        ledger = ledger_;
        allowances = allowances_;
        _penaltyBps[FindingKind.Abnormal] = 10_000; // 1x the under-reported amount
        _penaltyBps[FindingKind.Falsified] = 30_000; // 3x
        emit PenaltyRateSet(FindingKind.Abnormal, 10_000, msg.sender);
        emit PenaltyRateSet(FindingKind.Falsified, 30_000, msg.sender);
    }

    // -- auditors --------------------------------------------------------------------------

    function fileReport(address enterprise, uint32 period, uint128 verifiedG, bytes32 reportHash, string calldata uri)
        external
        onlyRole(AUDITOR_ROLE)
        returns (uint256 id)
    {
        _requireEnterprise(enterprise);
        _requireOpenPeriod(period);
        if (reportHash == bytes32(0)) revert EmptyReportHash();
        if (_corrected[enterprise][period]) revert AlreadyCorrected(enterprise, period);
        uint256 reported = ledger.reportedTotal(enterprise, period);
        _reports.push(
            Report({
                enterprise: enterprise,
                period: period,
                auditor: msg.sender,
                filedAt: uint64(block.timestamp),
                verifiedG: verifiedG,
                reportedG: reported,
                reportHash: reportHash,
                uri: uri
            })
        );
        id = _reports.length;
        _latestReport[enterprise][period] = id;
        allowances.recordVerified(enterprise, period, verifiedG);
        emit ReportFiled(id, enterprise, period, msg.sender, verifiedG, reported, reportHash, uri);
    }

    function fileFinding(FindingInput calldata f) external onlyRole(AUDITOR_ROLE) returns (uint256 id) {
        _requireEnterprise(f.enterprise);
        _requireKnownPeriod(f.period);
        if (f.kind == FindingKind.None) revert BadFindingKind(uint8(f.kind));
        if (f.evidenceHash == bytes32(0)) revert EmptyEvidenceHash();
        _checkRecord(f);
        Finding storage s = _findings.push();
        s.enterprise = f.enterprise;
        s.period = f.period;
        s.kind = f.kind;
        s.status = FindingStatus.Filed;
        s.auditor = msg.sender;
        s.filedAt = uint64(block.timestamp);
        s.correctedG = f.correctedG;
        s.evidenceHash = f.evidenceHash;
        s.gatewayKey = f.gatewayKey;
        s.batchSeq = f.batchSeq;
        s.recordLeaf = f.recordLeaf;
        s.evidenceUri = f.evidenceUri;
        id = _findings.length;
        _findingsOf[f.enterprise][f.period].push(id);
        emit FindingFiled(
            id,
            f.enterprise,
            f.period,
            msg.sender,
            f.kind,
            f.correctedG,
            f.evidenceHash,
            f.gatewayKey,
            f.batchSeq,
            f.recordLeaf,
            f.evidenceUri
        );
    }

    /// @dev A named record must be in an anchored batch of one of the enterprise's gateways,
    /// in the finding's period: the Merkle proof is checked against the anchored root.
    function _checkRecord(FindingInput calldata f) internal view {
        if (f.gatewayKey == bytes32(0)) {
            if (f.batchSeq != 0 || f.recordLeaf != bytes32(0) || f.proof.length != 0) revert IncompleteRecordRef();
            return;
        }
        if (registry.gateway(f.gatewayKey).enterprise != f.enterprise) {
            revert GatewayNotOfEnterprise(f.gatewayKey, f.enterprise);
        }
        EmissionsLedger.Batch memory b = ledger.batch(f.gatewayKey, f.batchSeq);
        if (b.headerHash == bytes32(0)) revert UnknownBatch(f.gatewayKey, f.batchSeq);
        if (b.period != f.period) revert BatchOutsidePeriod(f.gatewayKey, f.batchSeq, b.period);
        if (!ledger.verifyRecord(f.gatewayKey, f.batchSeq, f.recordLeaf, f.proof)) {
            revert InvalidRecordProof(f.gatewayKey, f.batchSeq, f.recordLeaf);
        }
    }

    // -- government ------------------------------------------------------------------------

    function confirmFinding(uint256 id) external onlyRole(GOVERNMENT_ROLE) {
        Finding storage f = _pending(id);
        address ent = f.enterprise;
        uint32 p = f.period;
        Allowances.Account memory a = allowances.accountOf(ent, p);
        uint256 previous = a.hasVerified ? a.verified : ledger.reportedTotal(ent, p);
        uint256 corrected = f.correctedG;
        uint256 penalty = corrected > previous ? (corrected - previous) * _penaltyBps[f.kind] / 10_000 : 0;
        f.status = FindingStatus.Confirmed;
        f.previousG = uint128(previous > type(uint128).max ? type(uint128).max : previous);
        f.penaltyG = uint128(penalty);
        f.decidedBy = msg.sender;
        f.decidedAt = uint64(block.timestamp);
        _corrected[ent][p] = true;
        allowances.correct(ent, p, corrected, penalty);
        emit FindingConfirmed(id, ent, p, msg.sender, previous, corrected, penalty);
    }

    function rejectFinding(uint256 id, string calldata reason) external onlyRole(GOVERNMENT_ROLE) {
        Finding storage f = _pending(id);
        f.status = FindingStatus.Rejected;
        f.decidedBy = msg.sender;
        f.decidedAt = uint64(block.timestamp);
        f.decisionNote = reason;
        emit FindingRejected(id, f.enterprise, f.period, msg.sender, reason);
    }

    function _pending(uint256 id) internal view returns (Finding storage f) {
        if (id == 0 || id > _findings.length) revert UnknownFinding(id);
        f = _findings[id - 1];
        if (f.status != FindingStatus.Filed) revert FindingNotPending(id, f.status);
        if (f.auditor == msg.sender) revert SelfReview(msg.sender);
    }

    /// @notice Penalty rate of a finding kind, basis points of the under-reported amount.
    function setPenaltyRate(FindingKind kind, uint32 bps) external onlyRole(GOVERNMENT_ROLE) {
        if (kind == FindingKind.None) revert BadFindingKind(uint8(kind));
        if (bps > MAX_PENALTY_BPS) revert BadPenaltyRate(bps);
        _penaltyBps[kind] = bps;
        emit PenaltyRateSet(kind, bps, msg.sender);
    }

    // -- views -----------------------------------------------------------------------------

    function report(uint256 id) external view returns (Report memory) {
        if (id == 0 || id > _reports.length) revert UnknownReport(id);
        return _reports[id - 1];
    }

    function reportCount() external view returns (uint256) {
        return _reports.length;
    }

    /// @notice The id of the report that holds the enterprise's verified emissions (0: none).
    function latestReport(address enterprise, uint32 period) external view returns (uint256) {
        return _latestReport[enterprise][period];
    }

    function finding(uint256 id) external view returns (Finding memory) {
        if (id == 0 || id > _findings.length) revert UnknownFinding(id);
        return _findings[id - 1];
    }

    function findingCount() external view returns (uint256) {
        return _findings.length;
    }

    function findingsOf(address enterprise, uint32 period) external view returns (uint256[] memory) {
        return _findingsOf[enterprise][period];
    }

    function penaltyRate(FindingKind kind) external view returns (uint32) {
        return _penaltyBps[kind];
    }

    function isCorrected(address enterprise, uint32 period) external view returns (bool) {
        return _corrected[enterprise][period];
    }
}
