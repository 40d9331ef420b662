// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MrvRegistry} from "./MrvRegistry.sol";
import {RegistryClient} from "./RegistryClient.sol";

/// @title Allowances: allocation, transfer and surrender of emission allowances, and each
/// enterprise's compliance account, per compliance period.
/// @notice Amounts are grams CO2e, like the batch headers. Allowances are per period
/// (vintage): a balance of period P only settles period P (no banking or borrowing).
/// Government allocates (directly, or as output x the industry benchmark when one is set);
/// enterprises transfer and surrender; the Market escrows through `lock`/`unlock`; the
/// Verification contract records verified emissions and applies penalties.
/// A penalty is deducted from the enterprise's balance of that period at once; whatever the
/// balance could not cover is added to what it must surrender. Compliance at close:
/// surrendered >= verified + (penalty - deducted).
contract Allowances is RegistryClient {
    enum Compliance {
        Open, // the period is not closed yet
        Unverified, // closed without verified emissions
        Compliant,
        NonCompliant
    }

    /// @notice One enterprise's compliance account for one period.
    struct Account {
        uint128 allocated;
        uint128 surrendered;
        uint128 verified;
        uint128 penalty;
        uint128 penaltyDeducted;
        bool hasVerified;
        bool settled;
        Compliance settledStatus;
    }

    mapping(uint32 => mapping(address => uint256)) private _balances;
    mapping(uint32 => mapping(address => Account)) private _accounts;
    mapping(uint32 => mapping(bytes32 => uint128)) private _benchmarks;
    mapping(uint32 => uint256) public allocatedTotal;
    mapping(uint32 => uint256) public surrenderedTotal;

    error ZeroAmount();
    error AmountTooLarge(uint256 amount);
    error SelfTransfer(address account);
    error InsufficientAllowance(address account, uint32 period, uint256 balance, uint256 needed);
    error NoBenchmark(uint32 period, string industryCode);

    event BenchmarkSet(uint32 indexed period, bytes32 indexed industryKey, string industryCode, uint128 gramsPerUnit);
    event Allocated(
        address indexed enterprise,
        uint32 indexed period,
        uint256 amountG,
        uint256 output,
        uint128 benchmarkGramsPerUnit,
        address indexed by
    );
    event Transferred(uint32 indexed period, address indexed from, address indexed to, uint256 amountG);
    event Surrendered(address indexed enterprise, uint32 indexed period, uint256 amountG, uint256 totalSurrenderedG);
    event VerifiedEmissionsSet(address indexed enterprise, uint32 indexed period, uint256 verifiedG, uint256 previousG);
    event PenaltyApplied(
        address indexed enterprise, uint32 indexed period, uint256 penaltyG, uint256 deductedG, uint256 outstandingG
    );
    event ComplianceSettled(
        address indexed enterprise,
        uint32 indexed period,
        Compliance status,
        uint256 verifiedG,
        uint256 surrenderedG,
        uint256 penaltyG,
        uint256 penaltyDeductedG
    );

    constructor(MrvRegistry registry_) RegistryClient(registry_) {}

    // -- government ------------------------------------------------------------------------

    /// @notice Allocation intensity of an industry in a period: grams CO2e per unit of output.
    function setBenchmark(uint32 period, string calldata industryCode, uint128 gramsPerUnit)
        external
        onlyRole(GOVERNMENT_ROLE)
    {
        _requireOpenPeriod(period);
        bytes32 ik = keccak256(bytes(industryCode));
        _benchmarks[period][ik] = gramsPerUnit;
        emit BenchmarkSet(period, ik, industryCode, gramsPerUnit);
    }

    function allocate(address enterprise, uint32 period, uint256 amountG)
        external
        onlyRole(GOVERNMENT_ROLE)
    {
        _allocate(enterprise, period, amountG, 0, 0);
    }

    /// @notice Allocate output x the benchmark of the enterprise's industry for the period.
    function allocateByBenchmark(address enterprise, uint32 period, uint256 output)
        external
        onlyRole(GOVERNMENT_ROLE)
    {
        string memory industry = registry.enterpriseIndustry(enterprise);
        uint128 b = _benchmarks[period][keccak256(bytes(industry))];
        if (b == 0) {
            _requireActiveEnterprise(enterprise);
            revert NoBenchmark(period, industry);
        }
        _allocate(enterprise, period, output * b, output, b);
    }

    function _allocate(address enterprise, uint32 period, uint256 amountG, uint256 output, uint128 b) internal {
        _requireActiveEnterprise(enterprise);
        _requireOpenPeriod(period);
        if (amountG == 0) revert ZeroAmount();
        Account storage a = _accounts[period][enterprise];
        uint256 total = uint256(a.allocated) + amountG;
        if (total > type(uint128).max) revert AmountTooLarge(amountG);
        a.allocated = uint128(total);
        _balances[period][enterprise] += amountG;
        allocatedTotal[period] += amountG;
        emit Allocated(enterprise, period, amountG, output, b, msg.sender);
    }

    /// @notice Record the compliance status of an enterprise for a closed period. May be
    /// called again (e.g. after a later confirmed finding); the last call holds.
    function settle(address enterprise, uint32 period) external onlyRole(GOVERNMENT_ROLE) {
        _requireEnterprise(enterprise);
        _requireKnownPeriod(period);
        if (!registry.isPeriodClosed(period)) revert PeriodNotClosed(period);
        Account storage a = _accounts[period][enterprise];
        Compliance status = _status(a, true);
        a.settled = true;
        a.settledStatus = status;
        emit ComplianceSettled(
            enterprise, period, status, a.verified, a.surrendered, a.penalty, a.penaltyDeducted
        );
    }

    // -- enterprises -----------------------------------------------------------------------

    function transfer(uint32 period, address to, uint256 amountG) external {
        _requireActiveEnterprise(msg.sender);
        _requireActiveEnterprise(to);
        if (to == msg.sender) revert SelfTransfer(to);
        _requireOpenPeriod(period);
        _move(period, msg.sender, to, amountG);
    }

    /// @notice Surrender allowances of `period` against its obligation (verified emissions
    /// plus any penalty the balance could not cover). A suspended enterprise may still
    /// surrender; nothing can be surrendered once the period is closed.
    function surrender(uint32 period, uint256 amountG) external {
        _requireEnterprise(msg.sender);
        _requireOpenPeriod(period);
        if (amountG == 0) revert ZeroAmount();
        uint256 bal = _balances[period][msg.sender];
        if (bal < amountG) revert InsufficientAllowance(msg.sender, period, bal, amountG);
        Account storage a = _accounts[period][msg.sender];
        uint256 total = uint256(a.surrendered) + amountG;
        if (total > type(uint128).max) revert AmountTooLarge(amountG);
        _balances[period][msg.sender] = bal - amountG;
        a.surrendered = uint128(total);
        surrenderedTotal[period] += amountG;
        emit Surrendered(msg.sender, period, amountG, total);
    }

    // -- modules ---------------------------------------------------------------------------

    /// @notice Market escrow: move an enterprise's allowances into the market's custody.
    function lock(address owner, uint32 period, uint256 amountG)
        external
        onlyRole(MARKET_CONTRACT_ROLE)
    {
        _requireActiveEnterprise(owner);
        _requireOpenPeriod(period);
        _move(period, owner, msg.sender, amountG);
    }

    /// @notice Market release: move escrowed allowances to a buyer, or back to the seller.
    function unlock(uint32 period, address to, uint256 amountG)
        external
        onlyRole(MARKET_CONTRACT_ROLE)
    {
        _move(period, msg.sender, to, amountG);
    }

    function recordVerified(address enterprise, uint32 period, uint256 verifiedG)
        external
        onlyRole(VERIFICATION_CONTRACT_ROLE)
    {
        _setVerified(_accounts[period][enterprise], enterprise, period, verifiedG);
    }

    /// @notice A confirmed finding: verified emissions become `correctedG`; `penaltyG` is
    /// deducted from the balance as far as it goes, the rest raises the surrender obligation.
    function correct(address enterprise, uint32 period, uint256 correctedG, uint256 penaltyG)
        external
        onlyRole(VERIFICATION_CONTRACT_ROLE)
    {
        Account storage a = _accounts[period][enterprise];
        _setVerified(a, enterprise, period, correctedG);
        if (penaltyG == 0) return;
        uint256 bal = _balances[period][enterprise];
        uint256 deducted = bal < penaltyG ? bal : penaltyG;
        uint256 penalty = uint256(a.penalty) + penaltyG;
        if (penalty > type(uint128).max) revert AmountTooLarge(penaltyG);
        a.penalty = uint128(penalty);
        a.penaltyDeducted += uint128(deducted);
        _balances[period][enterprise] = bal - deducted;
        emit PenaltyApplied(enterprise, period, penaltyG, deducted, penalty - a.penaltyDeducted);
    }

    function _setVerified(Account storage a, address enterprise, uint32 period, uint256 verifiedG) internal {
        if (verifiedG > type(uint128).max) revert AmountTooLarge(verifiedG);
        uint256 previous = a.verified;
        a.verified = uint128(verifiedG);
        a.hasVerified = true;
        emit VerifiedEmissionsSet(enterprise, period, verifiedG, previous);
    }

    function _move(uint32 period, address from, address to, uint256 amountG) internal {
        if (amountG == 0) revert ZeroAmount();
        uint256 bal = _balances[period][from];
        if (bal < amountG) revert InsufficientAllowance(from, period, bal, amountG);
        _balances[period][from] = bal - amountG;
        _balances[period][to] += amountG;
        emit Transferred(period, from, to, amountG);
    }

    // -- views -----------------------------------------------------------------------------

    function balanceOf(uint32 period, address account) external view returns (uint256) {
        return _balances[period][account];
    }

    function accountOf(address enterprise, uint32 period) external view returns (Account memory) {
        return _accounts[period][enterprise];
    }

    function benchmark(uint32 period, string calldata industryCode) external view returns (uint128) {
        return _benchmarks[period][keccak256(bytes(industryCode))];
    }

    /// @notice What the enterprise must surrender for the period: verified emissions plus the
    /// penalty not yet deducted.
    function obligation(address enterprise, uint32 period) public view returns (uint256) {
        Account storage a = _accounts[period][enterprise];
        return uint256(a.verified) + a.penalty - a.penaltyDeducted;
    }

    /// @notice Live compliance status (Open until the period is closed).
    function compliance(address enterprise, uint32 period) external view returns (Compliance) {
        return _status(_accounts[period][enterprise], registry.isPeriodClosed(period));
    }

    function _status(Account storage a, bool closed) internal view returns (Compliance) {
        if (!closed) return Compliance.Open;
        if (!a.hasVerified) return Compliance.Unverified;
        uint256 owed = uint256(a.verified) + a.penalty - a.penaltyDeducted;
        return a.surrendered >= owed ? Compliance.Compliant : Compliance.NonCompliant;
    }
}
