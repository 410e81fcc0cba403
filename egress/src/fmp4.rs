//! Fragmented MP4 (CMAF) for LL-HLS: the init segment (`ftyp` + `moov` with `mvex`) and media
//! fragments (`moof` + `mdat`). Boxes are encoded with `mp4-atom` (docs/decisions.md); the `mdat`
//! header is written here so frame payloads are copied once, into the fragment.
//!
//! Tracks: video (H.264, `avc1`, timescale 90 kHz) is track 1, audio (AAC, `mp4a`, timescale =
//! sample rate) is track 2. A fragment holds one `traf` per track that has samples, each with
//! `tfdt` (decode time of its first sample) and a `trun` giving every sample's duration, size,
//! flags and composition offset; both runs point into one `mdat`.

use bytes::Bytes;
use media::frame::{AudioConfig, VideoConfig};
use mp4_atom::{
    Audio, Avc1, Avcc, Decode, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl,
    Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// Track id of the video track.
pub const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track.
pub const AUDIO_TRACK: u32 = 2;
/// Video timescale (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// `sample_flags` of a sync sample (sample_depends_on = 2: depends on no other).
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample (depends on others, sample_is_non_sync_sample).
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Why a box could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    /// Neither a video nor an audio configuration.
    #[error("no track to write")]
    NoTracks,
    /// The AVC decoder configuration record could not be read back as `avcC`.
    #[error("invalid AVC decoder configuration: {0}")]
    Avcc(mp4_atom::Error),
    /// A box failed to encode (a value out of its field's range).
    #[error("mp4 box encoding: {0}")]
    Encode(mp4_atom::Error),
    /// The fragment does not fit 32-bit sizes and offsets.
    #[error("fragment too large")]
    TooLarge,
}

/// One sample of a fragment, times in the track's timescale.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Decode time.
    pub decode_time: u64,
    /// Duration.
    pub duration: u32,
    /// Presentation minus decode time.
    pub composition_offset: i32,
    /// A sync sample (video keyframe; every audio frame).
    pub keyframe: bool,
    /// The payload (AVC: length-prefixed NAL units as in the `avcC`; AAC: a raw frame).
    pub data: Bytes,
}

/// The init segment for these tracks.
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Result<Bytes, Fmp4Error> {
    if video.is_none() && audio.is_none() {
        return Err(Fmp4Error::NoTracks);
    }
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(v) = video {
        trak.push(video_trak(v)?);
        trex.push(track_extends(VIDEO_TRACK));
    }
    if let Some(a) = audio {
        trak.push(audio_trak(a));
        trex.push(track_extends(AUDIO_TRACK));
    }
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out).map_err(Fmp4Error::Encode)?;
    moov.encode(&mut out).map_err(Fmp4Error::Encode)?;
    Ok(Bytes::from(out))
}

fn track_extends(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Default::default()
    }
}

fn media_info() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url { location: String::new() }.into()],
        },
    }
}

fn empty_tables(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd { codecs: vec![codec] },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn video_trak(v: &VideoConfig) -> Result<Trak, Fmp4Error> {
    // Our record is an `avcC` body: read it back through mp4-atom so every field (including the
    // high-profile extension) is carried as is.
    let size = u32::try_from(v.avcc.len() + 8).map_err(|_| Fmp4Error::TooLarge)?;
    let mut boxed = Vec::with_capacity(v.avcc.len() + 8);
    boxed.extend_from_slice(&size.to_be_bytes());
    boxed.extend_from_slice(b"avcC");
    boxed.extend_from_slice(&v.avcc);
    let avcc = Avcc::decode(&mut boxed.as_slice()).map_err(Fmp4Error::Avcc)?;
    let width = u16::try_from(v.info.width).unwrap_or(u16::MAX);
    let height = u16::try_from(v.info.height).unwrap_or(u16::MAX);
    let stbl = empty_tables(
        Avc1 {
            visual: Visual {
                data_reference_index: 1,
                width,
                height,
                horizresolution: 72.into(),
                vertresolution: 72.into(),
                frame_count: 1,
                compressor: "".into(),
                depth: 24,
            },
            avcc,
            btrt: None,
            colr: None,
            pasp: None,
            taic: None,
            fiel: None,
            spatial: Default::default(),
        }
        .into(),
    );
    Ok(Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: b"vide".into(),
                name: "streamgate video".into(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: media_info(),
                stbl,
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

fn audio_trak(a: &AudioConfig) -> Trak {
    let freq_index = media::aac::SAMPLE_RATES
        .iter()
        .position(|&r| r == a.info.sample_rate)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(0x0f);
    let esds = Esds {
        es_desc: mp4_atom::esds::EsDescriptor {
            es_id: u16::try_from(AUDIO_TRACK).unwrap_or(2),
            depends_on_es_id: None,
            url: None,
            ocr_es_id: None,
            stream_priority: 0,
            dec_config: mp4_atom::esds::DecoderConfig {
                object_type_indication: 0x40, // MPEG-4 Audio
                stream_type: 5,               // audio
                dec_specific: Some(mp4_atom::esds::DecoderSpecific {
                    profile: a.info.object_type,
                    freq_index,
                    chan_conf: a.info.channels,
                    raw: a.asc.to_vec(),
                }),
                ..Default::default()
            },
            sl_config: mp4_atom::esds::SLConfig {},
        },
    };
    // The sample entry's rate field is 16.16 fixed point: rates above 65535 Hz do not fit.
    let rate = u16::try_from(a.info.sample_rate).unwrap_or(0);
    let stbl = empty_tables(
        Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: u16::from(a.info.channels.max(1)),
                sample_size: 16,
                sample_rate: rate.into(),
            },
            esds,
            btrt: None,
            taic: None,
        }
        .into(),
    );
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            alternate_group: 1,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: a.info.sample_rate,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: b"soun".into(),
                name: "streamgate audio".into(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: media_info(),
                stbl,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn track_fragment(track_id: u32, samples: &[Sample], data_offset: i32) -> Traf {
    let entries = samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            size: Some(u32::try_from(s.data.len()).unwrap_or(u32::MAX)),
            flags: Some(if s.keyframe { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
            cts: Some(i64::from(s.composition_offset)),
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: samples.first().map_or(0, |s| s.decode_time),
        }),
        trun: vec![Trun {
            data_offset: Some(data_offset),
            samples: TrunSamples::Explicit(entries),
        }],
        sbgp: vec![],
        sgpd: vec![],
        subs: vec![],
        saiz: vec![],
        saio: vec![],
        meta: None,
        senc: None,
        udta: None,
    }
}

/// One media fragment (`moof` + `mdat`) with the samples of both tracks, `sequence` in `mfhd`.
/// A track without samples gets no `traf`.
pub fn fragment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Result<Bytes, Fmp4Error> {
    let payload: usize = video.iter().chain(audio).map(|s| s.data.len()).sum();
    let video_bytes: usize = video.iter().map(|s| s.data.len()).sum();
    let build = |moof_size: usize| -> Result<Moof, Fmp4Error> {
        // Offsets from the first byte of the moof (default-base-is-moof) to each run's data.
        let video_at = i32::try_from(moof_size + 8).map_err(|_| Fmp4Error::TooLarge)?;
        let audio_at = i32::try_from(moof_size + 8 + video_bytes).map_err(|_| Fmp4Error::TooLarge)?;
        let mut traf = Vec::with_capacity(2);
        if !video.is_empty() {
            traf.push(track_fragment(VIDEO_TRACK, video, video_at));
        }
        if !audio.is_empty() {
            traf.push(track_fragment(AUDIO_TRACK, audio, audio_at));
        }
        Ok(Moof {
            mfhd: Mfhd { sequence_number: sequence },
            traf,
        })
    };
    // The moof's size does not depend on the offsets' values: encode once to learn it.
    let mut probe = Vec::with_capacity(256 + 16 * (video.len() + audio.len()));
    build(0)?.encode(&mut probe).map_err(Fmp4Error::Encode)?;
    let moof_size = probe.len();
    let mut out = Vec::with_capacity(moof_size + 8 + payload);
    build(moof_size)?.encode(&mut out).map_err(Fmp4Error::Encode)?;
    let mdat_size = u32::try_from(payload + 8).map_err(|_| Fmp4Error::TooLarge)?;
    out.extend_from_slice(&mdat_size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in video.iter().chain(audio) {
        out.extend_from_slice(&s.data);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{audio_config, video_config, PPS};
    use mp4_atom::Any;

    #[test]
    fn init_segment_carries_both_sample_entries() {
        let v = video_config(PPS);
        let init = init_segment(Some(&v), Some(&audio_config())).unwrap();
        let mut buf = init.as_ref();
        let ftyp = Ftyp::decode(&mut buf).unwrap();
        assert_eq!(ftyp.major_brand, b"iso6".into());
        let moov = Moov::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.mvex.as_ref().unwrap().trex.len(), 2);
        let video = &moov.trak[0];
        assert_eq!(video.tkhd.track_id, VIDEO_TRACK);
        assert_eq!(video.mdia.mdhd.timescale, 90_000);
        let mp4_atom::Codec::Avc1(avc1) = &video.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1")
        };
        assert_eq!((avc1.visual.width, avc1.visual.height), (1280, 720));
        // The avcC body is our record, byte for byte.
        let mut enc = Vec::new();
        avc1.avcc.encode(&mut enc).unwrap();
        assert_eq!(&enc[8..], v.avcc.as_ref());
        let audio = &moov.trak[1];
        assert_eq!(audio.mdia.mdhd.timescale, 48_000);
        let mp4_atom::Codec::Mp4a(mp4a) = &audio.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not mp4a")
        };
        let dec = mp4a.esds.es_desc.dec_config.dec_specific.as_ref().unwrap();
        assert_eq!(dec.raw, vec![0x11, 0x90]);
        assert_eq!(mp4a.audio.channel_count, 2);
        // Audio only: one trak.
        let init = init_segment(None, Some(&audio_config())).unwrap();
        let mut buf = init.as_ref();
        Ftyp::decode(&mut buf).unwrap();
        assert_eq!(Moov::decode(&mut buf).unwrap().trak.len(), 1);
        assert!(matches!(init_segment(None, None), Err(Fmp4Error::NoTracks)));
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_samples() {
        let v = |t: u64, key: bool, fill: u8| Sample {
            decode_time: t,
            duration: 3000,
            composition_offset: 3000,
            keyframe: key,
            data: Bytes::from(vec![fill; 10]),
        };
        let a = |t: u64, fill: u8| Sample {
            decode_time: t,
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from(vec![fill; 7]),
        };
        let frag = fragment(7, &[v(90_000, true, 1), v(93_000, false, 2)], &[a(48_000, 3), a(49_024, 4)]).unwrap();
        let mut buf = frag.as_ref();
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
            panic!("moof first")
        };
        let moof_len = frag.len() - buf.len();
        assert_eq!(moof.mfhd.sequence_number, 7);
        assert_eq!(moof.traf.len(), 2);
        // mdat header, then video then audio payloads.
        assert_eq!(&buf[4..8], b"mdat");
        assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize, buf.len());
        let check = |traf: &Traf, track: u32, tfdt: u64, fills: [u8; 2], size: usize, flags: [u32; 2]| {
            assert_eq!(traf.tfhd.track_id, track);
            assert!(traf.tfhd.default_base_is_moof);
            assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, tfdt);
            let trun = &traf.trun[0];
            let at = trun.data_offset.unwrap() as usize;
            assert_eq!(frag[at], fills[0]);
            assert_eq!(frag[at + size], fills[1]);
            let TrunSamples::Explicit(e) = &trun.samples else {
                panic!("explicit run")
            };
            assert_eq!(e.iter().map(|s| s.flags.unwrap()).collect::<Vec<_>>(), flags);
            assert!(e.iter().all(|s| s.size == Some(size as u32)));
        };
        check(&moof.traf[0], VIDEO_TRACK, 90_000, [1, 2], 10, [SYNC_SAMPLE, NON_SYNC_SAMPLE]);
        check(&moof.traf[1], AUDIO_TRACK, 48_000, [3, 4], 7, [SYNC_SAMPLE, SYNC_SAMPLE]);
        assert_eq!(moof.traf[0].trun[0].data_offset, Some(moof_len as i32 + 8));
        // A track without samples has no traf.
        let frag = fragment(8, &[], &[a(0, 5)]).unwrap();
        let Any::Moof(moof) = Any::decode(&mut frag.as_ref()).unwrap() else {
            panic!()
        };
        assert_eq!(moof.traf.len(), 1);
        assert_eq!(moof.traf[0].tfhd.track_id, AUDIO_TRACK);
    }
}
