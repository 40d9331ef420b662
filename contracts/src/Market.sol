// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MrvRegistry} from "./MrvRegistry.sol";
import {RegistryClient} from "./RegistryClient.sol";
import {Allowances} from "./Allowances.sol";

/// @title Market: transparent bilateral trading of allowances.
/// @notice A seller offers an amount of one period's allowances at a price per tonne, to one
/// named buyer or to any certified enterprise (buyer zero); the amount is escrowed in this
/// contract at once. A buyer accepts all or part of the rest; the seller (or government)
/// cancels the rest back. Every trade's volume, price and value is in a `Traded` event.
/// Money moves off-chain: `value` is in the minor currency unit the price is quoted in, and a
/// FINANCE_ROLE holder (the settling bank) may record the payment reference of a trade.
/// A trade's value is amountG x pricePerTonne / 1,000,000 rounded UP to a whole minor unit:
/// exact when the product is whole, otherwise at most one minor unit more, never 0; splitting
/// a purchase into small parts never lowers what the buyer owes.
contract Market is RegistryClient {
    enum OfferStatus {
        None,
        Open,
        Filled,
        Cancelled
    }

    struct Offer {
        address seller;
        uint32 period;
        OfferStatus status;
        uint64 createdAt;
        address buyer;
        uint128 amountG;
        uint128 remainingG;
        uint128 pricePerTonne;
    }

    struct Trade {
        uint256 offerId;
        address seller;
        uint32 period;
        uint64 tradedAt;
        address buyer;
        uint128 amountG;
        uint128 pricePerTonne;
        uint256 value;
        bytes32 paymentRef;
        address settledBy;
    }

    uint256 public constant GRAMS_PER_TONNE = 1_000_000;

    Allowances public immutable allowances;
    Offer[] private _offers;
    Trade[] private _trades;

    error ZeroAmount();
    error ZeroPrice();
    error SelfTrade(address account);
    error UnknownOffer(uint256 id);
    error OfferNotOpen(uint256 id, OfferStatus status);
    error NotOfferBuyer(uint256 id, address caller);
    error NotOfferSeller(uint256 id, address caller);
    error AmountExceedsOffer(uint256 id, uint256 remainingG, uint256 amountG);
    error UnknownTrade(uint256 id);
    error TradeAlreadySettled(uint256 id);
    error ZeroPaymentRef();

    event OfferMade(
        uint256 indexed offerId,
        address indexed seller,
        address indexed buyer,
        uint32 period,
        uint256 amountG,
        uint256 pricePerTonne
    );
    event Traded(
        uint256 indexed tradeId,
        uint256 indexed offerId,
        address indexed buyer,
        address seller,
        uint32 period,
        uint256 amountG,
        uint256 pricePerTonne,
        uint256 value
    );
    event OfferCancelled(uint256 indexed offerId, address indexed by, uint256 returnedG);
    event SettlementConfirmed(uint256 indexed tradeId, address indexed by, bytes32 paymentRef);

    constructor(MrvRegistry registry_, Allowances allowances_) RegistryClient(registry_) {
        if (address(allowances_) == address(0)) revert ZeroAddress();
        allowances = allowances_;
    }

    /// @notice Offer `amountG` of `period`'s allowances at `pricePerTonne`; escrowed here.
    function offer(uint32 period, uint128 amountG, uint128 pricePerTonne, address buyer)
        external
        returns (uint256 id)
    {
        _requireActiveEnterprise(msg.sender);
        if (buyer != address(0)) {
            if (buyer == msg.sender) revert SelfTrade(buyer);
            _requireActiveEnterprise(buyer);
        }
        if (amountG == 0) revert ZeroAmount();
        if (pricePerTonne == 0) revert ZeroPrice();
        _offers.push(
            Offer({
                seller: msg.sender,
                period: period,
                status: OfferStatus.Open,
                createdAt: uint64(block.timestamp),
                buyer: buyer,
                amountG: amountG,
                remainingG: amountG,
                pricePerTonne: pricePerTonne
            })
        );
        id = _offers.length;
        allowances.lock(msg.sender, period, amountG);
        emit OfferMade(id, msg.sender, buyer, period, amountG, pricePerTonne);
    }

    /// @notice Buy `amountG` (all or part of what is left) of an open offer.
    function accept(uint256 id, uint128 amountG) external returns (uint256 tradeId) {
        Offer storage o = _open(id);
        _requireActiveEnterprise(msg.sender);
        if (msg.sender == o.seller) revert SelfTrade(msg.sender);
        if (o.buyer != address(0) && o.buyer != msg.sender) revert NotOfferBuyer(id, msg.sender);
        _requireActiveEnterprise(o.seller);
        _requireOpenPeriod(o.period);
        if (amountG == 0) revert ZeroAmount();
        if (amountG > o.remainingG) revert AmountExceedsOffer(id, o.remainingG, amountG);
        o.remainingG -= amountG;
        if (o.remainingG == 0) o.status = OfferStatus.Filled;
        uint256 value = tradeValue(amountG, o.pricePerTonne);
        _trades.push(
            Trade({
                offerId: id,
                seller: o.seller,
                period: o.period,
                tradedAt: uint64(block.timestamp),
                buyer: msg.sender,
                amountG: amountG,
                pricePerTonne: o.pricePerTonne,
                value: value,
                paymentRef: bytes32(0),
                settledBy: address(0)
            })
        );
        tradeId = _trades.length;
        allowances.unlock(o.period, msg.sender, amountG);
        emit Traded(tradeId, id, msg.sender, o.seller, o.period, amountG, o.pricePerTonne, value);
    }

    /// @notice What `amountG` grams at `pricePerTonne` cost, in minor currency units:
    /// ceil(amountG x pricePerTonne / 1,000,000). No overflow: the product of two uint128 is
    /// below 2^256 - 2^129, far enough from the top for the rounding term.
    function tradeValue(uint128 amountG, uint128 pricePerTonne) public pure returns (uint256) {
        return (uint256(amountG) * pricePerTonne + (GRAMS_PER_TONNE - 1)) / GRAMS_PER_TONNE;
    }

    /// @notice The seller, or government, withdraws the rest of an open offer; the escrow
    /// goes back to the seller (also for a closed period or a suspended seller).
    function cancel(uint256 id) external {
        Offer storage o = _open(id);
        if (msg.sender != o.seller && !registry.hasRole(GOVERNMENT_ROLE, msg.sender)) {
            revert NotOfferSeller(id, msg.sender);
        }
        uint128 rest = o.remainingG;
        o.remainingG = 0;
        o.status = OfferStatus.Cancelled;
        allowances.unlock(o.period, o.seller, rest);
        emit OfferCancelled(id, msg.sender, rest);
    }

    /// @notice A FINANCE_ROLE holder records that a trade's payment was settled.
    function confirmSettlement(uint256 tradeId, bytes32 paymentRef) external onlyRole(FINANCE_ROLE) {
        if (tradeId == 0 || tradeId > _trades.length) revert UnknownTrade(tradeId);
        if (paymentRef == bytes32(0)) revert ZeroPaymentRef();
        Trade storage t = _trades[tradeId - 1];
        if (t.settledBy != address(0)) revert TradeAlreadySettled(tradeId);
        t.paymentRef = paymentRef;
        t.settledBy = msg.sender;
        emit SettlementConfirmed(tradeId, msg.sender, paymentRef);
    }

    function _open(uint256 id) internal view returns (Offer storage o) {
        if (id == 0 || id > _offers.length) revert UnknownOffer(id);
        o = _offers[id - 1];
        if (o.status != OfferStatus.Open) revert OfferNotOpen(id, o.status);
    }

    // -- views -----------------------------------------------------------------------------

    function getOffer(uint256 id) external view returns (Offer memory) {
        if (id == 0 || id > _offers.length) revert UnknownOffer(id);
        return _offers[id - 1];
    }

    function offerCount() external view returns (uint256) {
        return _offers.length;
    }

    function trade(uint256 id) external view returns (Trade memory) {
        if (id == 0 || id > _trades.length) revert UnknownTrade(id);
        return _trades[id - 1];
    }

    function tradeCount() external view returns (uint256) {
        return _trades.length;
    }
}
