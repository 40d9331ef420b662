// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {MrvRegistry} from "./MrvRegistry.sol";

/// @title EmissionsLedger: per-gateway anchoring of signed MRV record batches.
/// @notice Each gateway's batches form a hash chain: gapless `seq` from 1, each header naming
/// the previous header's hash and covering the next contiguous run of record seqs. The chain
/// keeps the header; the records stay off-chain and are provable against `root`.
/// The header hash is computed here exactly as in docs/formats.md; the Ed25519 signature over
/// it is stored in the event and checked off-chain against the gateway's registered key (the
/// EVM targets have no Ed25519 precompile).
/// Gateways are registered in the MrvRegistry (by their enterprise); only a gateway's
/// registered sender anchors its batches. Each batch's CO2e (per scope) accrues to the
/// gateway's enterprise in the compliance period that holds the batch's `lastTsNs` (period 0
/// when no defined period holds it).
contract EmissionsLedger {
    bytes32 public constant BATCH_TAG = keccak256("mrv-gateway/batch/v1");

    struct Header {
        bytes32 gatewayKey;
        uint64 seq;
        bytes32 prevHash;
        bytes32 root;
        uint32 count;
        uint64 firstRecordSeq;
        uint64 lastRecordSeq;
        int64 firstTsNs;
        int64 lastTsNs;
        uint64 co2eScope1G;
        uint64 co2eScope2G;
        uint64 co2eScope3G;
    }

    /// @notice A gateway as the uplink sees it: its registration plus its anchoring state.
    struct Gateway {
        string id;
        address sender;
        bytes32 signingKey;
        bool active;
        uint64 lastSeq;
        uint64 lastRecordSeq;
        bytes32 lastHeaderHash;
    }

    struct Batch {
        bytes32 headerHash;
        bytes32 root;
        uint32 count;
        uint64 firstRecordSeq;
        uint64 lastRecordSeq;
        uint64 blockNumber;
        uint32 period;
    }

    /// @notice Reported emissions of one enterprise in one period, in grams CO2e.
    struct Emissions {
        uint128 scope1G;
        uint128 scope2G;
        uint128 scope3G;
        uint64 batches;
    }

    struct Tip {
        uint64 lastSeq;
        uint64 lastRecordSeq;
        bytes32 lastHeaderHash;
    }

    address public immutable deployer;
    MrvRegistry public registry;
    mapping(bytes32 => Tip) private _tips;
    mapping(bytes32 => mapping(uint64 => Batch)) private _batches;
    mapping(address => mapping(uint32 => Emissions)) private _emissions;

    error NotDeployer(address caller);
    error RegistryAlreadyBound(address registry);
    error RegistryNotBound();
    error ZeroAddress();
    error UnknownGateway(bytes32 gatewayKey);
    error GatewayNotActive(bytes32 gatewayKey);
    error NotGatewaySender(bytes32 gatewayKey, address caller);
    error WrongSeq(uint64 expected, uint64 got);
    error WrongPrevHash(bytes32 expected, bytes32 got);
    error WrongRecordRange(uint64 expectedFirst, uint64 first, uint64 last, uint32 count);
    error BatchAlreadyAnchored(uint64 seq, bytes32 headerHash);
    error ConflictingBatch(uint64 seq, bytes32 onChain, bytes32 submitted);
    error BadSignatureLength(uint256 length);

    event RegistryBound(address indexed registry);
    event BatchAnchored(
        bytes32 indexed gatewayKey,
        uint64 indexed seq,
        bytes32 headerHash,
        Header header,
        bytes signature
    );
    event EmissionsAccrued(
        address indexed enterprise,
        uint32 indexed period,
        bytes32 indexed gatewayKey,
        uint64 seq,
        uint64 co2eScope1G,
        uint64 co2eScope2G,
        uint64 co2eScope3G
    );

    /// @dev No constructor arguments (deployable from bare bytecode); the deployer binds the
    /// registry once with `bindRegistry`, and nothing anchors before that.
    constructor() {
        deployer = msg.sender;
    }

    function bindRegistry(MrvRegistry registry_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (address(registry) != address(0)) revert RegistryAlreadyBound(address(registry));
        if (address(registry_) == address(0)) revert ZeroAddress();
        registry = registry_;
        emit RegistryBound(address(registry_));
    }

    function _registry() internal view returns (MrvRegistry r) {
        r = registry;
        if (address(r) == address(0)) revert RegistryNotBound();
    }

    function headerHash(Header calldata h) public pure returns (bytes32) {
        return keccak256(abi.encode(BATCH_TAG, h));
    }

    /// @notice Anchor the next batch of a gateway. Reverts with `BatchAlreadyAnchored` when the
    /// same header is already held (a retry), `ConflictingBatch` when another header holds its seq.
    function anchorBatch(Header calldata h, bytes calldata signature) external {
        (address sender, address enterprise, bool active, uint32 period) =
            _registry().anchorContext(h.gatewayKey, h.lastTsNs);
        if (sender == address(0)) revert UnknownGateway(h.gatewayKey);
        if (!active) revert GatewayNotActive(h.gatewayKey);
        if (msg.sender != sender) revert NotGatewaySender(h.gatewayKey, msg.sender);
        if (signature.length != 64) revert BadSignatureLength(signature.length);
        bytes32 hh = headerHash(h);
        _advance(h, hh);
        _batches[h.gatewayKey][h.seq] = Batch({
            headerHash: hh,
            root: h.root,
            count: h.count,
            firstRecordSeq: h.firstRecordSeq,
            lastRecordSeq: h.lastRecordSeq,
            blockNumber: uint64(block.number),
            period: period
        });
        Emissions storage e = _emissions[enterprise][period];
        e.scope1G += h.co2eScope1G;
        e.scope2G += h.co2eScope2G;
        e.scope3G += h.co2eScope3G;
        e.batches += 1;
        emit BatchAnchored(h.gatewayKey, h.seq, hh, h, signature);
        emit EmissionsAccrued(
            enterprise, period, h.gatewayKey, h.seq, h.co2eScope1G, h.co2eScope2G, h.co2eScope3G
        );
    }

    /// @dev The hash-chain rules: a retry, a conflict, then gapless seq, prev hash, records.
    function _advance(Header calldata h, bytes32 hh) internal {
        Tip storage t = _tips[h.gatewayKey];
        if (h.seq != 0 && h.seq <= t.lastSeq) {
            bytes32 held = _batches[h.gatewayKey][h.seq].headerHash;
            if (held == hh) revert BatchAlreadyAnchored(h.seq, hh);
            revert ConflictingBatch(h.seq, held, hh);
        }
        if (h.seq != t.lastSeq + 1) revert WrongSeq(t.lastSeq + 1, h.seq);
        if (h.prevHash != t.lastHeaderHash) revert WrongPrevHash(t.lastHeaderHash, h.prevHash);
        if (
            h.count == 0 || h.firstRecordSeq != t.lastRecordSeq + 1
                || h.lastRecordSeq != h.firstRecordSeq + h.count - 1
        ) revert WrongRecordRange(t.lastRecordSeq + 1, h.firstRecordSeq, h.lastRecordSeq, h.count);
        t.lastSeq = h.seq;
        t.lastRecordSeq = h.lastRecordSeq;
        t.lastHeaderHash = hh;
    }

    // -- views -----------------------------------------------------------------------------

    /// @notice The gateway's registration (from the registry) and its anchoring state.
    function gateway(bytes32 key) external view returns (Gateway memory) {
        MrvRegistry.Gateway memory g = _registry().gateway(key);
        Tip memory t = _tips[key];
        return Gateway({
            id: g.id,
            sender: g.sender,
            signingKey: g.signingKey,
            active: g.active,
            lastSeq: t.lastSeq,
            lastRecordSeq: t.lastRecordSeq,
            lastHeaderHash: t.lastHeaderHash
        });
    }

    function lastSeq(bytes32 key) external view returns (uint64) {
        return _tips[key].lastSeq;
    }

    function batch(bytes32 key, uint64 seq) external view returns (Batch memory) {
        return _batches[key][seq];
    }

    /// @notice Emissions reported by an enterprise's gateways for a period (0: outside any).
    function emissionsOf(address enterprise, uint32 period) external view returns (Emissions memory) {
        return _emissions[enterprise][period];
    }

    /// @notice Scope 1 + 2 + 3 reported emissions of an enterprise for a period, grams CO2e.
    function reportedTotal(address enterprise, uint32 period) external view returns (uint256) {
        Emissions storage e = _emissions[enterprise][period];
        return uint256(e.scope1G) + e.scope2G + e.scope3G;
    }

    /// @notice True when `leaf` is in the anchored batch `seq` of gateway `key`.
    function verifyRecord(bytes32 key, uint64 seq, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = _batches[key][seq].root;
        if (root == bytes32(0)) return false;
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
