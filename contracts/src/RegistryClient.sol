// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MrvRegistry} from "./MrvRegistry.sol";

/// @title RegistryClient: role, enterprise and period checks against the MrvRegistry.
/// @notice Every check is on `msg.sender`; roles live in the registry alone, so the regulator
/// manages every contract's permissions in one place (RoleGranted/RoleRevoked events).
abstract contract RegistryClient {
    MrvRegistry public immutable registry;

    /// @dev The registry's role ids (checked equal to `MrvRegistry`'s by the tests).
    bytes32 internal constant GOVERNMENT_ROLE = keccak256("GOVERNMENT_ROLE");
    bytes32 internal constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    bytes32 internal constant FINANCE_ROLE = keccak256("FINANCE_ROLE");
    bytes32 internal constant MARKET_CONTRACT_ROLE = keccak256("MARKET_CONTRACT_ROLE");
    bytes32 internal constant VERIFICATION_CONTRACT_ROLE = keccak256("VERIFICATION_CONTRACT_ROLE");

    /// @dev Same selector as OpenZeppelin's IAccessControl error.
    error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);
    error ZeroAddress();
    error UnknownEnterprise(address account);
    error NotActiveEnterprise(address account);
    error UnknownPeriod(uint32 period);
    error PeriodIsClosed(uint32 period);
    error PeriodNotClosed(uint32 period);

    constructor(MrvRegistry registry_) {
        if (address(registry_) == address(0)) revert ZeroAddress();
        registry = registry_;
    }

    modifier onlyRole(bytes32 role) {
        if (!registry.hasRole(role, msg.sender)) revert AccessControlUnauthorizedAccount(msg.sender, role);
        _;
    }

    function _requireActiveEnterprise(address account) internal view {
        if (!registry.isActiveEnterprise(account)) {
            if (registry.enterpriseStatus(account) == MrvRegistry.Status.None) revert UnknownEnterprise(account);
            revert NotActiveEnterprise(account);
        }
    }

    function _requireEnterprise(address account) internal view {
        if (registry.enterpriseStatus(account) == MrvRegistry.Status.None) revert UnknownEnterprise(account);
    }

    function _requireOpenPeriod(uint32 id) internal view {
        if (!registry.isPeriodOpen(id)) {
            if (id == 0 || id > registry.periodCount()) revert UnknownPeriod(id);
            revert PeriodIsClosed(id);
        }
    }

    function _requireKnownPeriod(uint32 id) internal view {
        if (id == 0 || id > registry.periodCount()) revert UnknownPeriod(id);
    }
}
