// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title EmissionsLedger: per-gateway anchoring of signed MRV record batches.
/// @notice Each gateway's batches form a hash chain: gapless `seq` from 1, each header naming
/// the previous header's hash and covering the next contiguous run of record seqs. The chain
/// keeps the header; the records stay off-chain and are provable against `root`.
/// The header hash is computed here exactly as in docs/formats.md; the Ed25519 signature over
/// it is stored in the event and checked off-chain against the gateway's registered key (the
/// EVM targets have no Ed25519 precompile).
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
    }

    address public admin;
    mapping(bytes32 => Gateway) private _gateways;
    mapping(bytes32 => mapping(uint64 => Batch)) private _batches;
    bytes32[] private _gatewayKeys;

    error NotAdmin(address caller);
    error GatewayExists(bytes32 gatewayKey);
    error UnknownGateway(bytes32 gatewayKey);
    error GatewayNotActive(bytes32 gatewayKey);
    error NotGatewaySender(bytes32 gatewayKey, address caller);
    error WrongSeq(uint64 expected, uint64 got);
    error WrongPrevHash(bytes32 expected, bytes32 got);
    error WrongRecordRange(uint64 expectedFirst, uint64 first, uint64 last, uint32 count);
    error BatchAlreadyAnchored(uint64 seq, bytes32 headerHash);
    error ConflictingBatch(uint64 seq, bytes32 onChain, bytes32 submitted);
    error BadSignatureLength(uint256 length);
    error ZeroAddress();

    event AdminChanged(address indexed previous, address indexed current);
    event GatewayRegistered(bytes32 indexed gatewayKey, string gatewayId, address sender, bytes32 signingKey);
    event GatewayRevoked(bytes32 indexed gatewayKey);
    event BatchAnchored(
        bytes32 indexed gatewayKey,
        uint64 indexed seq,
        bytes32 headerHash,
        Header header,
        bytes signature
    );

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        _;
    }

    constructor() {
        admin = msg.sender;
        emit AdminChanged(address(0), msg.sender);
    }

    function setAdmin(address next) external onlyAdmin {
        if (next == address(0)) revert ZeroAddress();
        emit AdminChanged(admin, next);
        admin = next;
    }

    /// @notice Register a gateway: its id (keccak256 of the UTF-8 id is its key), the account
    /// that sends its transactions and its Ed25519 public key.
    function registerGateway(string calldata gatewayId, address sender, bytes32 signingKey)
        external
        onlyAdmin
        returns (bytes32 key)
    {
        if (sender == address(0)) revert ZeroAddress();
        key = keccak256(bytes(gatewayId));
        if (_gateways[key].sender != address(0)) revert GatewayExists(key);
        _gateways[key] = Gateway({
            id: gatewayId,
            sender: sender,
            signingKey: signingKey,
            active: true,
            lastSeq: 0,
            lastRecordSeq: 0,
            lastHeaderHash: bytes32(0)
        });
        _gatewayKeys.push(key);
        emit GatewayRegistered(key, gatewayId, sender, signingKey);
    }

    function revokeGateway(bytes32 key) external onlyAdmin {
        Gateway storage g = _gateways[key];
        if (g.sender == address(0)) revert UnknownGateway(key);
        if (!g.active) revert GatewayNotActive(key);
        g.active = false;
        emit GatewayRevoked(key);
    }

    function headerHash(Header calldata h) public pure returns (bytes32) {
        return keccak256(abi.encode(BATCH_TAG, h));
    }

    /// @notice Anchor the next batch of a gateway. Reverts with `BatchAlreadyAnchored` when the
    /// same header is already held (a retry), `ConflictingBatch` when another header holds its seq.
    function anchorBatch(Header calldata h, bytes calldata signature) external {
        Gateway storage g = _gateways[h.gatewayKey];
        if (g.sender == address(0)) revert UnknownGateway(h.gatewayKey);
        if (!g.active) revert GatewayNotActive(h.gatewayKey);
        if (msg.sender != g.sender) revert NotGatewaySender(h.gatewayKey, msg.sender);
        if (signature.length != 64) revert BadSignatureLength(signature.length);
        bytes32 hh = headerHash(h);
        if (h.seq != 0 && h.seq <= g.lastSeq) {
            bytes32 held = _batches[h.gatewayKey][h.seq].headerHash;
            if (held == hh) revert BatchAlreadyAnchored(h.seq, hh);
            revert ConflictingBatch(h.seq, held, hh);
        }
        if (h.seq != g.lastSeq + 1) revert WrongSeq(g.lastSeq + 1, h.seq);
        if (h.prevHash != g.lastHeaderHash) revert WrongPrevHash(g.lastHeaderHash, h.prevHash);
        if (
            h.count == 0 || h.firstRecordSeq != g.lastRecordSeq + 1
                || h.lastRecordSeq != h.firstRecordSeq + h.count - 1
        ) revert WrongRecordRange(g.lastRecordSeq + 1, h.firstRecordSeq, h.lastRecordSeq, h.count);

        g.lastSeq = h.seq;
        g.lastRecordSeq = h.lastRecordSeq;
        g.lastHeaderHash = hh;
        _batches[h.gatewayKey][h.seq] = Batch({
            headerHash: hh,
            root: h.root,
            count: h.count,
            firstRecordSeq: h.firstRecordSeq,
            lastRecordSeq: h.lastRecordSeq,
            blockNumber: uint64(block.number)
        });
        emit BatchAnchored(h.gatewayKey, h.seq, hh, h, signature);
    }

    function gateway(bytes32 key) external view returns (Gateway memory) {
        Gateway memory g = _gateways[key];
        if (g.sender == address(0)) revert UnknownGateway(key);
        return g;
    }

    function gatewayCount() external view returns (uint256) {
        return _gatewayKeys.length;
    }

    function gatewayKeyAt(uint256 i) external view returns (bytes32) {
        return _gatewayKeys[i];
    }

    function lastSeq(bytes32 key) external view returns (uint64) {
        return _gateways[key].lastSeq;
    }

    function batch(bytes32 key, uint64 seq) external view returns (Batch memory) {
        return _batches[key][seq];
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
