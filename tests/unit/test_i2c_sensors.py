"""I2C bus retries, and the ADS1115 and AHT10/AHT20 drivers against the simulated chips."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import pytest

from printhost.sensors import SensorError
from printhost.sensors.adc import AdcTemperatureSensor
from printhost.sensors.ads1115 import ADS1115, ADS1115Settings
from printhost.sensors.aht10 import AHT10, AHT10Settings, crc8, decode
from printhost.sensors.i2c import I2CError, SMBusI2C
from printhost.sensors.thermistor import sensor
from printhost.sim.i2c import STUCK_TIMEOUT_S, ProtocolViolation, SimADS1115, SimAHT10, SimI2CBus

LSB_4V = 4.096 / 32768.0


def writes(bus: SimI2CBus, address: int) -> list[bytes]:
    """The plain writes (commands) sent to `address`, in order."""
    return [t.write for t in bus.transfers
            if t.address == address and t.write and not t.read_length]


# --------------------------------------------------------------------------- bus


class FakeSMBus:
    """Stands in for smbus2.SMBus: records i2c_rdwr messages, fails on demand."""

    def __init__(self, reply: bytes = b"", failures: list[int] | None = None) -> None:
        self.reply = reply
        self.failures = list(failures or [])
        self.calls: list[list[tuple[int, int, bytes]]] = []
        self.closed = False

    def i2c_rdwr(self, *msgs):
        self.calls.append([(m.addr, m.flags, bytes(m)) for m in msgs])
        if self.failures:
            code = self.failures.pop(0)
            raise OSError(code, "fake")
        for m in msgs:
            if m.flags & 1:                      # I2C_M_RD
                for i in range(m.len):
                    m.buf[i] = self.reply[i]

    def close(self):
        self.closed = True


def test_smbus_bus_sends_raw_messages():
    fake = FakeSMBus(reply=b"\x12\x34")
    bus = SMBusI2C(fake, sleep=lambda s: None)
    bus.write(0x48, [0x01, 0xC3, 0x83])
    assert fake.calls[-1] == [(0x48, 0, b"\x01\xc3\x83")]
    assert bus.write_read(0x48, b"\x00", 2) == b"\x12\x34"
    (w_addr, w_flags, w_data), (r_addr, r_flags, _) = fake.calls[-1]
    assert (w_addr, w_flags, w_data) == (0x48, 0, b"\x00")
    assert (r_addr, r_flags & 1) == (0x48, 1)      # one combined transfer: repeated start
    assert bus.read(0x38, 1) == b"\x12"
    assert fake.calls[-1][0][:2] == (0x38, 1)       # a bare read: no command byte first
    bus.close()
    assert fake.closed


def test_smbus_bus_retries_a_bounded_number_of_times():
    slept: list[float] = []
    fake = FakeSMBus(reply=b"\xaa", failures=[errno.EREMOTEIO, errno.EIO])
    bus = SMBusI2C(fake, retries=2, retry_delay_s=0.004, sleep=slept.append)
    assert bus.read(0x48, 1) == b"\xaa"
    assert len(fake.calls) == 3 and slept == [0.004, 0.004]

    fake.failures = [errno.EREMOTEIO] * 10
    with pytest.raises(I2CError) as err:
        bus.read(0x48, 1)
    assert len(fake.calls) == 6                     # three more attempts, no more
    assert err.value.attempts == 3 and err.value.errno == errno.EREMOTEIO
    assert err.value.address == 0x48
    assert "0x48" in str(err.value) and "no acknowledge" in str(err.value)


def test_opening_a_missing_bus_is_a_clear_error():
    with pytest.raises(I2CError, match="cannot open /dev/i2c-250"):
        SMBusI2C(250)


def test_bus_argument_checks():
    bus = SimI2CBus()
    for bad in (0x00, 0x78, 0x148, "0x48"):
        with pytest.raises(ValueError):
            bus.read(bad, 1)
    with pytest.raises(ValueError):
        bus.read(0x48, 0)
    with pytest.raises(ValueError):
        bus.write(0x48, b"")
    with pytest.raises(ValueError):
        bus.write(0x48, [256])


def test_absent_device_is_a_nack_after_every_attempt():
    bus = SimI2CBus(retries=3)
    with pytest.raises(I2CError, match="no acknowledge.*4 attempts"):
        bus.read(0x50, 2)
    assert [t.error for t in bus.transfers] == [errno.EREMOTEIO] * 4


@pytest.mark.parametrize("kind, code, words", [("oserror", errno.EIO, "I/O error"),
                                               ("nack", errno.EREMOTEIO, "no acknowledge")])
def test_transient_faults_are_retried_and_lasting_ones_surface(kind, code, words):
    bus = SimI2CBus()
    ads = ADS1115(bus)
    dev = bus.attach(SimADS1115())
    dev.set_input(0, 1.0)
    bus.inject_fault(kind, address=0x48, count=2)
    assert ads.read_voltage(0) == pytest.approx(1.0, abs=LSB_4V)
    assert [t.error for t in bus.transfers][:3] == [code, code, None]
    bus.inject_fault(kind, address=0x48)
    with pytest.raises(I2CError, match=words) as err:
        ads.read_voltage(0)
    assert err.value.errno == code and err.value.attempts == 3


def test_stuck_bus_fails_after_the_timeout_for_every_address_until_cleared():
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    bus.attach(SimAHT10("aht20"))
    dev.set_input(1, 2.0)
    bus.inject_fault("stuck")
    start = bus.clock()
    for address in (0x48, 0x38):
        with pytest.raises(I2CError, match="bus timeout") as err:
            bus.read(address, 2)
        assert err.value.errno == errno.ETIMEDOUT
    # Each of the 2 x 3 attempts waits for the controller's timeout; the retries of
    # each read add two retry delays: bounded, and long enough to notice.
    assert bus.clock() - start == pytest.approx(6 * STUCK_TIMEOUT_S + 4 * 0.005)
    bus.clear_faults()
    assert ADS1115(bus).read_voltage(1) == pytest.approx(2.0, abs=LSB_4V)


def test_fault_on_one_address_leaves_others_alone():
    bus = SimI2CBus()
    bus.attach(SimADS1115(0x49)).set_input(0, 0.5)
    bus.inject_fault("nack", address=0x48)
    ads = ADS1115(bus, ADS1115Settings(address=0x49))
    assert ads.read_voltage(0) == pytest.approx(0.5, abs=LSB_4V)


# --------------------------------------------------------------------------- ADS1115


@pytest.mark.parametrize("settings, channel, config", [
    # OS | MUX | PGA | MODE | DR | COMP_QUE: written out field by field
    (ADS1115Settings(), 0, 0b1_100_001_1_100_00011),
    (ADS1115Settings(full_scale_v=2.048, data_rate_sps=475), 2, 0b1_110_010_1_110_00011),
    (ADS1115Settings(full_scale_v=6.144, data_rate_sps=8), 3, 0b1_111_000_1_000_00011),
    (ADS1115Settings(full_scale_v=0.256, data_rate_sps=860, reference_v=0.2), (0, 1),
     0b1_000_101_1_111_00011),
    (ADS1115Settings(), (2, 3), 0b1_011_001_1_100_00011),
])
def test_ads1115_config_register_bytes(settings, channel, config):
    bus = SimI2CBus()
    bus.attach(SimADS1115(settings.address))
    ADS1115(bus, settings).read_raw(channel)
    assert writes(bus, 0x48)[0] == bytes((0x01, config >> 8, config & 0xFF))


def test_ads1115_reads_single_ended_and_differential_volts():
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    ads = ADS1115(bus)
    dev.set_input(0, 1.234)
    dev.set_input(1, 1.734)
    dev.set_input(2, 3.3)
    assert ads.read_voltage(0) == pytest.approx(1.234, abs=LSB_4V)
    assert ads.read_voltage(2) == pytest.approx(3.3, abs=LSB_4V)
    assert ads.read_voltage((0, 1)) == pytest.approx(-0.5, abs=LSB_4V)   # signed, MSB first
    assert ads.read_raw((0, 1)) == round(-0.5 / 4.096 * 32768)
    assert dev.conversions == 4


def test_ads1115_waits_for_the_conversion_before_reading():
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    dev.set_input(0, lambda now: 0.1 + now)       # the input keeps moving
    ads = ADS1115(bus, ADS1115Settings(data_rate_sps=8))
    volts = ads.read_voltage(0)
    start = next(t.time for t in bus.transfers if t.write[:1] == b"\x01" and len(t.write) == 3)
    read = [t for t in bus.transfers if t.write == b"\x00"][-1]
    assert read.time - start >= 1.0 / 8
    # the value is the one converted at the end of the conversion period
    assert volts == pytest.approx(0.1 + start + 1.0 / 8, abs=LSB_4V)


def test_ads1115_polls_a_slow_conversion():
    class SlowADS(SimADS1115):
        def _period(self, config):
            return 1.8 * super()._period(config)     # a chip with a slow oscillator

    bus = SimI2CBus()
    bus.attach(SlowADS()).set_input(3, 2.5)
    assert ADS1115(bus).read_voltage(3) == pytest.approx(2.5, abs=LSB_4V)
    polls = [t for t in bus.transfers if t.write == b"\x01" and t.read_length == 2]
    assert len(polls) > 1
    assert polls[0].reply[0] & 0x80 == 0 and polls[-1].reply[0] & 0x80


def test_ads1115_conversion_that_never_finishes_is_a_bounded_error():
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    dev.stalled = True
    start = bus.clock()
    with pytest.raises(SensorError, match="conversion not finished"):
        ADS1115(bus).read_raw(0)
    polls = [t for t in bus.transfers if t.write == b"\x01" and t.read_length == 2]
    assert len(polls) == 10
    assert bus.clock() - start < 4 * (1.0 / 128)
    assert not any(t.write == b"\x00" for t in bus.transfers)    # never read a stale result


def test_ads1115_config_readback_mismatch_is_an_error():
    class Forgetful(SimADS1115):
        def write(self, data, now):
            super().write(data, now)
            if len(data) == 3:
                self.config = 0x0583        # took the start bit, lost the settings

    bus = SimI2CBus()
    bus.attach(Forgetful())
    with pytest.raises(SensorError, match="reads back"):
        ADS1115(bus).read_raw(1)


def test_ads1115_fraction_of_a_thermistor_divider():
    adc = AdcTemperatureSensor(sensor("Generic 3950"), pullup_ohm=4700.0)
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    ads = ADS1115(bus)
    for temp_c in (25.0, 60.0, 120.0):
        dev.set_input(0, 3.3 * adc.fraction(temp_c))
        assert adc.temp_c(ads.read_fraction(0)) == pytest.approx(temp_c, abs=0.1)
    dev.set_input(0, 3.3)                            # open thermistor: pin at the supply
    assert adc.temp_c(ads.read_fraction(0)) < -50.0
    dev.set_input(0, 5.0)                            # clipped at full scale: the rail
    assert ads.read_fraction(0) == 1.0
    assert adc.temp_c(ads.read_fraction(0)) == float("-inf")


def test_ads1115_ratiometric_reference_channel():
    adc = AdcTemperatureSensor(sensor("EPCOS 100K B57560G104F"))
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    ads = ADS1115(bus, ADS1115Settings(reference_channel=3))
    dev.set_input(3, 3.21)                           # the rail sags; the ratio does not
    dev.set_input(1, 3.21 * adc.fraction(45.0))
    assert adc.temp_c(ads.read_fraction(1)) == pytest.approx(45.0, abs=0.1)
    dev.set_input(3, 0.0)
    with pytest.raises(SensorError, match="reference input 3"):
        ads.read_fraction(1)
    with pytest.raises(ValueError):
        ads.read_fraction(3)
    narrow = ADS1115(bus, ADS1115Settings(full_scale_v=2.048))
    with pytest.raises(ValueError, match="cannot measure a divider"):
        narrow.read_fraction(1)


def test_ads1115_settings_are_checked():
    for kwargs in ({"address": 0x47}, {"full_scale_v": 3.3}, {"data_rate_sps": 100},
                   {"reference_channel": 4}, {"reference_v": 0.0}):
        with pytest.raises(ValueError):
            ADS1115Settings(**kwargs)
    with pytest.raises(ValueError):
        ADS1115(SimI2CBus()).read_raw((1, 0))
    with pytest.raises(ValueError):
        ADS1115(SimI2CBus()).read_raw(4)


def test_simulated_ads1115_rejects_driver_mistakes():
    bus = SimI2CBus()
    dev = bus.attach(SimADS1115())
    with pytest.raises(ProtocolViolation, match="read-only"):
        bus.write(0x48, b"\x00\x12\x34")
    with pytest.raises(ProtocolViolation, match="bits 7:2"):
        bus.write(0x48, b"\x05")
    with pytest.raises(ProtocolViolation, match="exactly 2"):
        bus.write(0x48, b"\x01\xc3")
    with pytest.raises(ProtocolViolation, match="2 bytes"):
        bus.write_read(0x48, b"\x01", 3)
    assert len(bus.transfers) == 4                    # a violation is never retried
    assert all(t.violation and t.reply is None for t in bus.transfers)
    # registers come out MSB first; the power-on config is 0x8583
    assert bus.write_read(0x48, b"\x01", 2) == b"\x85\x83"
    assert bus.write_read(0x48, b"\x02", 2) == b"\x80\x00"
    # continuous mode keeps converting on its own; OS reads 0 while it does
    dev.set_input(0, 1.0)
    bus.write(0x48, b"\x01\x42\x83")                  # MUX AIN0, +-4.096 V, continuous, 128 SPS
    bus.sleep(0.02)
    assert bus.write_read(0x48, b"\x01", 2)[0] & 0x80 == 0
    assert int.from_bytes(bus.write_read(0x48, b"\x00", 2), "big") == round(1.0 / 4.096 * 32768)


# --------------------------------------------------------------------------- AHT10 / AHT20


def test_crc_and_decoding_of_a_known_frame():
    # A frame read from a real AHT20: status 0x1C, data, CRC 0xD2.
    frame = bytes.fromhex("1c3b5e8688b2")
    assert crc8(frame) == 0xD2
    reading = decode(frame)
    assert reading.humidity_pct == pytest.approx(23.191, abs=0.001)
    assert reading.temp_c == pytest.approx(31.675, abs=0.001)


def test_aht10_initialises_then_measures():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht10"))
    dev.temperature_c, dev.humidity_pct = 41.3, 27.5
    reading = AHT10(bus).measure()
    assert reading.temp_c == pytest.approx(41.3, abs=0.001)
    assert reading.humidity_pct == pytest.approx(27.5, abs=0.001)
    assert writes(bus, 0x38) == [b"\xba", b"\xe1\x08\x00", b"\xac\x33\x00"]
    assert all(t.read_length == 6 for t in bus.transfers if t.read_length > 1)
    dev.temperature_c, dev.humidity_pct = -12.0, 88.0
    later = AHT10(bus).measure()
    assert (later.temp_c, later.humidity_pct) == pytest.approx((-12.0, 88.0), abs=0.001)


def test_aht10_measurement_waits_at_least_80_ms():
    bus = SimI2CBus()
    bus.attach(SimAHT10("aht10"))
    AHT10(bus).measure()
    trigger = next(t.time for t in bus.transfers if t.write == b"\xac\x33\x00")
    frame = [t for t in bus.transfers if t.read_length == 6][-1]
    assert frame.time - trigger >= 0.080
    assert frame.reply[0] & 0x80 == 0


def test_aht20_comes_up_calibrated_and_checks_crc():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    dev.temperature_c, dev.humidity_pct = 23.4, 55.5
    reading = AHT10(bus, AHT10Settings(variant="aht20")).measure()
    assert (reading.temp_c, reading.humidity_pct) == pytest.approx((23.4, 55.5), abs=0.001)
    assert writes(bus, 0x38) == [b"\xba", b"\xac\x33\x00"]      # no calibration needed
    frame = [t for t in bus.transfers if t.read_length == 7][-1].reply
    assert crc8(frame[:6]) == frame[6]


def test_aht20_that_is_not_calibrated_gets_its_own_command():
    bus = SimI2CBus()
    bus.attach(SimAHT10("aht20", calibrated_at_power_on=False))
    AHT10(bus, AHT10Settings(variant="aht20")).measure()
    assert b"\xbe\x08\x00" in writes(bus, 0x38)


def test_wrong_variant_is_caught_by_the_simulated_chip():
    bus = SimI2CBus()
    bus.attach(SimAHT10("aht20", calibrated_at_power_on=False))
    with pytest.raises(ProtocolViolation, match="0xBE"):
        AHT10(bus, AHT10Settings(variant="aht10")).measure()


def test_aht_extremes_of_the_range():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    aht = AHT10(bus, AHT10Settings(variant="aht20"))
    dev.temperature_c, dev.humidity_pct = -40.0, 0.0
    reading = aht.measure()
    assert (reading.temp_c, reading.humidity_pct) == pytest.approx((-40.0, 0.0), abs=0.001)
    dev.temperature_c, dev.humidity_pct = 85.0, 100.0
    reading = aht.measure()
    assert reading.temp_c == pytest.approx(85.0, abs=0.001)
    assert 99.99 < reading.humidity_pct < 100.0


def test_slow_measurement_is_polled_until_ready():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    dev.measure_s = 0.125
    dev.temperature_c = 30.0
    reading = AHT10(bus, AHT10Settings(variant="aht20")).measure()
    assert reading.temp_c == pytest.approx(30.0, abs=0.001)
    frames = [t.reply for t in bus.transfers if t.read_length == 7]
    assert len(frames) == 6 and frames[0][0] & 0x80 and not frames[-1][0] & 0x80


def test_sensor_stuck_busy_is_a_bounded_error():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    aht = AHT10(bus, AHT10Settings(variant="aht20"))
    aht.initialize()
    dev.stuck_busy = True
    start = bus.clock()
    with pytest.raises(SensorError, match="still busy after 170 ms"):
        aht.measure()
    assert bus.clock() - start == pytest.approx(0.170)
    assert sum(1 for t in bus.transfers if t.read_length == 7) == 10


@pytest.mark.parametrize("bad_frames, ok", [(1, True), (2, True), (3, False)])
def test_crc_mismatch_is_reread_then_an_error(bad_frames, ok):
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    dev.temperature_c = 50.0
    aht = AHT10(bus, AHT10Settings(variant="aht20"))
    aht.initialize()
    dev.corrupt_crc = bad_frames
    if ok:
        assert aht.measure().temp_c == pytest.approx(50.0, abs=0.001)
        assert dev.measurements == 1                 # re-read, not re-measured
    else:
        with pytest.raises(SensorError, match="CRC mismatch on 3 reads"):
            aht.measure()


def test_crc_check_can_be_turned_off():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht20"))
    dev.corrupt_crc = 5
    AHT10(bus, AHT10Settings(variant="aht20", check_crc=False)).measure()
    assert all(t.read_length <= 6 for t in bus.transfers)


def test_i2c_failure_surfaces_and_the_next_measurement_reinitialises():
    bus = SimI2CBus()
    bus.attach(SimAHT10("aht10"))
    aht = AHT10(bus)
    aht.measure()
    bus.inject_fault("nack", address=0x38)
    with pytest.raises(I2CError, match="0x38.*no acknowledge"):
        aht.measure()
    bus.clear_faults()
    bus.transfers.clear()
    aht.measure()
    assert writes(bus, 0x38)[0] == b"\xba"


def test_lost_calibration_is_an_error_and_reinitialises():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht10"))
    dev.temperature_c = 33.0
    aht = AHT10(bus)
    aht.measure()
    dev.power_on()                                   # a brown-out: calibration is gone
    with pytest.raises(SensorError, match="lost its calibration"):
        aht.measure()
    bus.transfers.clear()
    assert aht.measure().temp_c == pytest.approx(33.0, abs=0.001)
    assert writes(bus, 0x38) == [b"\xba", b"\xe1\x08\x00", b"\xac\x33\x00"]


def test_simulated_aht_protocol_rules():
    bus = SimI2CBus()
    dev = bus.attach(SimAHT10("aht10"))
    bus.write(0x38, b"\xac\x33\x00")               # uncalibrated: measures, says so
    bus.sleep(0.08)
    assert bus.read(0x38, 6)[0] & 0x88 == 0
    with pytest.raises(ProtocolViolation, match="0x08 0x00"):
        bus.write(0x38, b"\xe1\x00\x00")
    bus.write(0x38, b"\xe1\x08\x00")
    bus.sleep(0.02)
    with pytest.raises(ProtocolViolation, match="0x33 0x00"):
        bus.write(0x38, b"\xac\x00\x00")
    with pytest.raises(ProtocolViolation, match="6 bytes"):
        bus.read(0x38, 7)
    with pytest.raises(ProtocolViolation, match="unknown"):
        bus.write(0x38, b"\x71")
    bus.write(0x38, b"\xac\x33\x00")
    with pytest.raises(ProtocolViolation, match="busy"):
        bus.write(0x38, b"\xac\x33\x00")
    # during a soft reset the chip does not acknowledge; the retries are too short to wait
    bus.write(0x38, b"\xba")
    with pytest.raises(I2CError, match="no acknowledge"):
        bus.read(0x38, 1)
    bus.sleep(0.02)
    assert bus.read(0x38, 1)[0] & 0x08 == 0          # the AHT10 needs calibrating again
    assert dev.measurements == 1


def test_aht_settings_are_checked():
    with pytest.raises(ValueError):
        AHT10Settings(variant="aht30")
    with pytest.raises(ValueError):
        AHT10Settings(variant="aht20", address=0x39)
    assert AHT10Settings(address=0x39).address == 0x39


def test_every_sensor_setting_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")
    for cls in (ADS1115Settings, AHT10Settings):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` | `" in doc, f"{cls.__name__}.{f.name}"
