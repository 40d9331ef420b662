// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title MrvRegistry: who is who in the MRV system, and the compliance calendar.
/// @notice Roles (OpenZeppelin AccessControl): the regulator holds DEFAULT_ADMIN_ROLE and grants
/// GOVERNMENT_ROLE, AUDITOR_ROLE and FINANCE_ROLE to accounts, and the two module roles to the
/// system's own contracts (Market and Verification move allowances in `Allowances`).
/// Government certifies enterprises: an enterprise *is* its account address; the unified social
/// credit code, name, industry and region are attributes, never authority. An account is either
/// an enterprise or a role holder, never both (no self-certification, no auditing oneself).
/// Government reserves each gateway id for one enterprise (as it assigns HJ 212 monitoring-point
/// codes); only that enterprise registers it (Ed25519 key, sending address), so no enterprise can
/// take another's gateway id. Government (or the owning enterprise) revokes gateways. Government defines compliance periods ([startNs, endNs) in
/// UTC nanoseconds, in order, never overlapping) and closes them once they have ended.
/// An active enterprise consents, on-chain, that a FINANCE_ROLE holder reads its data off-chain
/// until a time (`grantDataAccess`), and withdraws that consent at once (`revokeDataAccess`).
contract MrvRegistry is AccessControl {
    bytes32 public constant GOVERNMENT_ROLE = keccak256("GOVERNMENT_ROLE");
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    bytes32 public constant FINANCE_ROLE = keccak256("FINANCE_ROLE");
    /// @notice Held by the Market contract: escrows and releases allowances.
    bytes32 public constant MARKET_CONTRACT_ROLE = keccak256("MARKET_CONTRACT_ROLE");
    /// @notice Held by the Verification contract: sets verified emissions and penalties.
    bytes32 public constant VERIFICATION_CONTRACT_ROLE = keccak256("VERIFICATION_CONTRACT_ROLE");

    enum Status {
        None,
        Active,
        Suspended
    }

    struct Enterprise {
        address account;
        Status status;
        uint64 certifiedAt;
        string creditCode;
        string name;
        string industryCode;
        string region;
    }

    /// @notice What government certifies about an enterprise (attributes, not authority).
    struct EnterpriseInfo {
        string creditCode;
        string name;
        string industryCode;
        string region;
    }

    struct Gateway {
        string id;
        address enterprise;
        bool active;
        uint64 registeredAt;
        address sender;
        bytes32 signingKey;
    }

    struct Period {
        int64 startNs;
        int64 endNs;
        bool closed;
    }

    mapping(address => Enterprise) private _enterprises;
    address[] private _enterpriseList;
    mapping(bytes32 => address) private _byCreditCode;
    mapping(bytes32 => Gateway) private _gateways;
    mapping(bytes32 => address) private _reservedFor;
    bytes32[] private _gatewayKeys;
    mapping(address => bytes32[]) private _gatewaysOf;
    Period[] private _periods;
    /// @dev enterprise => financial institution => end of its data access (block seconds).
    mapping(address => mapping(address => uint64)) private _dataAccess;

    error ZeroAddress();
    error AccountIsEnterprise(address account);
    error AccountHoldsRole(address account, bytes32 role);
    error EnterpriseExists(address account);
    error UnknownEnterprise(address account);
    error NotActiveEnterprise(address account);
    error EnterpriseNotSuspended(address account);
    error BadCreditCode(string creditCode);
    error CreditCodeTaken(string creditCode, address holder);
    error EmptyField(string field);
    error GatewayExists(bytes32 gatewayKey);
    error GatewayIdNotReserved(bytes32 gatewayKey, address reservedFor);
    error UnknownGateway(bytes32 gatewayKey);
    error GatewayNotActive(bytes32 gatewayKey);
    error NotGatewayOwner(bytes32 gatewayKey, address caller);
    error ZeroSigningKey();
    error BadPeriod(int64 startNs, int64 endNs, int64 previousEndNs);
    error UnknownPeriod(uint32 period);
    error PeriodIsClosed(uint32 period);
    error PeriodNotEnded(uint32 period, int64 endNs, int64 nowNs);
    error NotFinance(address account);
    error AccessUntilInPast(uint64 until, uint64 nowAt);
    error NoDataAccess(address enterprise, address finance);

    event EnterpriseCertified(address indexed account, EnterpriseInfo info, address indexed by);
    event EnterpriseSuspended(address indexed account, string reason, address indexed by);
    event EnterpriseReinstated(address indexed account, address indexed by);
    event GatewayIdReserved(
        bytes32 indexed gatewayKey, address indexed enterprise, string gatewayId, address indexed by
    );
    event GatewayRegistered(
        bytes32 indexed gatewayKey, address indexed enterprise, string gatewayId, address sender, bytes32 signingKey
    );
    event GatewayRevoked(bytes32 indexed gatewayKey, address indexed enterprise, address indexed by);
    event PeriodDefined(uint32 indexed period, int64 startNs, int64 endNs, address indexed by);
    event PeriodClosed(uint32 indexed period, int64 closedAtNs, address indexed by);
    event DataAccessGranted(address indexed enterprise, address indexed finance, uint64 until);
    event DataAccessRevoked(address indexed enterprise, address indexed finance);

    constructor(address regulator) {
        if (regulator == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, regulator);
    }

    // -- roles -----------------------------------------------------------------------------

    /// @dev Every grant path goes through here: an enterprise's account never holds a role.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        if (_enterprises[account].status != Status.None) revert AccountIsEnterprise(account);
        return super._grantRole(role, account);
    }

    function _roleOf(address account) internal view returns (bool, bytes32) {
        bytes32[6] memory roles = [
            DEFAULT_ADMIN_ROLE,
            GOVERNMENT_ROLE,
            AUDITOR_ROLE,
            FINANCE_ROLE,
            MARKET_CONTRACT_ROLE,
            VERIFICATION_CONTRACT_ROLE
        ];
        for (uint256 i = 0; i < roles.length; i++) {
            if (hasRole(roles[i], account)) return (true, roles[i]);
        }
        return (false, bytes32(0));
    }

    // -- enterprises -----------------------------------------------------------------------

    /// @notice Certify an enterprise. `creditCode` is the 18-character unified social credit
    /// code (GB 32100-2015; its check character is validated off-chain by `mrvctl`).
    function certifyEnterprise(address account, EnterpriseInfo calldata info) external onlyRole(GOVERNMENT_ROLE) {
        if (account == address(0)) revert ZeroAddress();
        if (_enterprises[account].status != Status.None) revert EnterpriseExists(account);
        (bool held, bytes32 role) = _roleOf(account);
        if (held) revert AccountHoldsRole(account, role);
        _checkInfo(info);
        bytes32 ck = keccak256(bytes(info.creditCode));
        address holder = _byCreditCode[ck];
        if (holder != address(0)) revert CreditCodeTaken(info.creditCode, holder);
        _byCreditCode[ck] = account;
        Enterprise storage e = _enterprises[account];
        e.account = account;
        e.status = Status.Active;
        e.certifiedAt = uint64(block.timestamp);
        e.creditCode = info.creditCode;
        e.name = info.name;
        e.industryCode = info.industryCode;
        e.region = info.region;
        _enterpriseList.push(account);
        emit EnterpriseCertified(account, info, msg.sender);
    }

    function _checkInfo(EnterpriseInfo calldata info) internal pure {
        if (bytes(info.creditCode).length != 18) revert BadCreditCode(info.creditCode);
        if (bytes(info.name).length == 0) revert EmptyField("name");
        if (bytes(info.industryCode).length == 0) revert EmptyField("industryCode");
        if (bytes(info.region).length == 0) revert EmptyField("region");
    }

    function suspendEnterprise(address account, string calldata reason) external onlyRole(GOVERNMENT_ROLE) {
        Enterprise storage e = _enterprises[account];
        if (e.status == Status.None) revert UnknownEnterprise(account);
        if (e.status != Status.Active) revert NotActiveEnterprise(account);
        e.status = Status.Suspended;
        emit EnterpriseSuspended(account, reason, msg.sender);
    }

    function reinstateEnterprise(address account) external onlyRole(GOVERNMENT_ROLE) {
        Enterprise storage e = _enterprises[account];
        if (e.status == Status.None) revert UnknownEnterprise(account);
        if (e.status != Status.Suspended) revert EnterpriseNotSuspended(account);
        e.status = Status.Active;
        emit EnterpriseReinstated(account, msg.sender);
    }

    // -- gateways --------------------------------------------------------------------------

    /// @notice Government reserves a gateway id for an enterprise (key: keccak256 of the UTF-8
    /// id); only that enterprise may then register it. Reserving again moves an id that is not
    /// registered yet to another enterprise; a registered id is never moved (`GatewayExists`).
    function reserveGatewayId(string calldata gatewayId, address enterpriseAccount)
        external
        onlyRole(GOVERNMENT_ROLE)
        returns (bytes32 key)
    {
        if (bytes(gatewayId).length == 0) revert EmptyField("gatewayId");
        if (_enterprises[enterpriseAccount].status == Status.None) revert UnknownEnterprise(enterpriseAccount);
        key = keccak256(bytes(gatewayId));
        if (_gateways[key].enterprise != address(0)) revert GatewayExists(key);
        _reservedFor[key] = enterpriseAccount;
        emit GatewayIdReserved(key, enterpriseAccount, gatewayId, msg.sender);
    }

    /// @notice An active enterprise registers one of its gateways under an id government
    /// reserved for it: the id (its key is keccak256 of the UTF-8 id), the address that sends
    /// its transactions and its Ed25519 public key.
    function registerGateway(string calldata gatewayId, address sender, bytes32 signingKey)
        external
        returns (bytes32 key)
    {
        Enterprise storage e = _enterprises[msg.sender];
        if (e.status != Status.Active) revert NotActiveEnterprise(msg.sender);
        if (sender == address(0)) revert ZeroAddress();
        if (signingKey == bytes32(0)) revert ZeroSigningKey();
        if (bytes(gatewayId).length == 0) revert EmptyField("gatewayId");
        key = keccak256(bytes(gatewayId));
        if (_gateways[key].enterprise != address(0)) revert GatewayExists(key);
        if (_reservedFor[key] != msg.sender) revert GatewayIdNotReserved(key, _reservedFor[key]);
        _gateways[key] = Gateway({
            id: gatewayId,
            enterprise: msg.sender,
            active: true,
            registeredAt: uint64(block.timestamp),
            sender: sender,
            signingKey: signingKey
        });
        _gatewayKeys.push(key);
        _gatewaysOf[msg.sender].push(key);
        emit GatewayRegistered(key, msg.sender, gatewayId, sender, signingKey);
    }

    /// @notice Government, or the enterprise that owns it, revokes a gateway for good.
    function revokeGateway(bytes32 key) external {
        Gateway storage g = _gateways[key];
        if (g.enterprise == address(0)) revert UnknownGateway(key);
        if (msg.sender != g.enterprise && !hasRole(GOVERNMENT_ROLE, msg.sender)) {
            revert NotGatewayOwner(key, msg.sender);
        }
        if (!g.active) revert GatewayNotActive(key);
        g.active = false;
        emit GatewayRevoked(key, g.enterprise, msg.sender);
    }

    // -- compliance calendar ---------------------------------------------------------------

    /// @notice Append the next compliance period [startNs, endNs): after the previous one,
    /// never overlapping it (a gap is allowed; batches there accrue to period 0).
    function definePeriod(int64 startNs, int64 endNs) external onlyRole(GOVERNMENT_ROLE) returns (uint32 id) {
        int64 prevEnd = _periods.length == 0 ? type(int64).min : _periods[_periods.length - 1].endNs;
        if (startNs >= endNs || startNs < prevEnd) revert BadPeriod(startNs, endNs, prevEnd);
        _periods.push(Period({startNs: startNs, endNs: endNs, closed: false}));
        id = uint32(_periods.length);
        emit PeriodDefined(id, startNs, endNs, msg.sender);
    }

    /// @notice Close a period once it has ended: no more allocation, transfer, trading or
    /// surrender for it; reports are final (later corrections only through findings).
    function closePeriod(uint32 id) external onlyRole(GOVERNMENT_ROLE) {
        Period storage p = _period(id);
        if (p.closed) revert PeriodIsClosed(id);
        int64 nowNs = int64(int256(block.timestamp) * 1e9);
        if (nowNs < p.endNs) revert PeriodNotEnded(id, p.endNs, nowNs);
        p.closed = true;
        emit PeriodClosed(id, nowNs, msg.sender);
    }

    function _period(uint32 id) internal view returns (Period storage) {
        if (id == 0 || id > _periods.length) revert UnknownPeriod(id);
        return _periods[id - 1];
    }

    // -- data access: an enterprise consents to a financial institution reading its data ----

    /// @notice An active enterprise (the caller) lets a FINANCE_ROLE holder read its data
    /// off-chain until `until` (block seconds, in the future). Granting again replaces the end
    /// (longer or shorter). The portal honours it; the chain only records the consent.
    function grantDataAccess(address finance, uint64 until) external {
        if (_enterprises[msg.sender].status != Status.Active) revert NotActiveEnterprise(msg.sender);
        if (!hasRole(FINANCE_ROLE, finance)) revert NotFinance(finance);
        if (until <= block.timestamp) revert AccessUntilInPast(until, uint64(block.timestamp));
        _dataAccess[msg.sender][finance] = until;
        emit DataAccessGranted(msg.sender, finance, until);
    }

    /// @notice An active enterprise (the caller) withdraws a grant (expired or not) at once.
    /// The institution need not hold FINANCE_ROLE any more.
    function revokeDataAccess(address finance) external {
        if (_enterprises[msg.sender].status != Status.Active) revert NotActiveEnterprise(msg.sender);
        if (_dataAccess[msg.sender][finance] == 0) revert NoDataAccess(msg.sender, finance);
        _dataAccess[msg.sender][finance] = 0;
        emit DataAccessRevoked(msg.sender, finance);
    }

    // -- views -----------------------------------------------------------------------------

    function enterprise(address account) external view returns (Enterprise memory) {
        Enterprise memory e = _enterprises[account];
        if (e.status == Status.None) revert UnknownEnterprise(account);
        return e;
    }

    function enterpriseStatus(address account) external view returns (Status) {
        return _enterprises[account].status;
    }

    function isActiveEnterprise(address account) external view returns (bool) {
        return _enterprises[account].status == Status.Active;
    }

    function enterpriseIndustry(address account) external view returns (string memory) {
        return _enterprises[account].industryCode;
    }

    function enterpriseCount() external view returns (uint256) {
        return _enterpriseList.length;
    }

    function enterpriseAt(uint256 i) external view returns (address) {
        return _enterpriseList[i];
    }

    function enterpriseByCreditCode(string calldata creditCode) external view returns (address) {
        return _byCreditCode[keccak256(bytes(creditCode))];
    }

    function gateway(bytes32 key) external view returns (Gateway memory) {
        Gateway memory g = _gateways[key];
        if (g.enterprise == address(0)) revert UnknownGateway(key);
        return g;
    }

    /// @notice The enterprise a gateway id (key) is reserved for; zero when none.
    function gatewayReservedFor(bytes32 key) external view returns (address) {
        return _reservedFor[key];
    }

    function gatewayCount() external view returns (uint256) {
        return _gatewayKeys.length;
    }

    function gatewayKeyAt(uint256 i) external view returns (bytes32) {
        return _gatewayKeys[i];
    }

    function gatewaysOf(address account) external view returns (bytes32[] memory) {
        return _gatewaysOf[account];
    }

    /// @notice What `EmissionsLedger.anchorBatch` needs in one call: the gateway's sender,
    /// enterprise and state (zero sender: unknown), and the period that holds `tsNs`.
    function anchorContext(bytes32 key, int64 tsNs)
        external
        view
        returns (address sender, address enterpriseAccount, bool active, uint32 periodId)
    {
        Gateway storage g = _gateways[key];
        return (g.sender, g.enterprise, g.active, periodAt(tsNs));
    }

    function period(uint32 id) external view returns (Period memory) {
        return _period(id);
    }

    function periodCount() external view returns (uint256) {
        return _periods.length;
    }

    /// @notice The id of the period that holds `tsNs`, or 0 when none does.
    function periodAt(int64 tsNs) public view returns (uint32) {
        uint256 lo = 0;
        uint256 hi = _periods.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (_periods[mid].startNs <= tsNs) lo = mid + 1;
            else hi = mid;
        }
        if (lo == 0 || tsNs >= _periods[lo - 1].endNs) return 0;
        return uint32(lo);
    }

    /// @notice True for a defined period that is not closed.
    function isPeriodOpen(uint32 id) external view returns (bool) {
        return id != 0 && id <= _periods.length && !_periods[id - 1].closed;
    }

    /// @notice The end (block seconds) of the enterprise's grant to `finance`; 0 when none.
    function dataAccessUntil(address enterpriseAccount, address finance) external view returns (uint64) {
        return _dataAccess[enterpriseAccount][finance];
    }

    /// @notice True while the enterprise's grant to `finance` has not ended.
    function hasDataAccess(address enterpriseAccount, address finance) external view returns (bool) {
        return _dataAccess[enterpriseAccount][finance] > block.timestamp;
    }

    function isPeriodClosed(uint32 id) external view returns (bool) {
        return id != 0 && id <= _periods.length && _periods[id - 1].closed;
    }
}
